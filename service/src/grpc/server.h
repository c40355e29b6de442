/*
 * The gRPC front on the C core: completion-queue threads, one small state
 * machine per call, protobuf-c messages, hd_err -> gRPC status mapping.
 */
#ifndef HD_SERVER_H
#define HD_SERVER_H

#include "control.h"
#include "handlerd/handlerd.h"
#include "outbox.h"
#include "store.h"

typedef struct hd_server hd_server;

typedef struct hd_server_config {
  const char *listen;    /* "127.0.0.1:50051"; port 0 picks a free one */
  int threads;           /* completion-queue threads; 0: one per core */
  int max_calls;         /* calls in flight before RESOURCE_EXHAUSTED */
  int max_message_bytes; /* largest request accepted */
  int stream_window;     /* stream requests handled ahead of replies */
  int max_topic_path;    /* bytes; longer is INVALID_ARGUMENT */
  /* Client connections open at once (0: half the open-files limit); one
   * more is closed as it arrives. */
  int max_connections;
  int idle_timeout_ms;      /* a connection without calls is closed */
  int handshake_timeout_ms; /* a connection that never finishes its own */
  int keepalive_time_ms;    /* ping an idle client after this long */
  int max_health_watches;   /* Health/Watch streams (not in max_calls) */
  /* Bearer token for the control RPCs (AddHandler, RemoveHandler,
   * ListHandlers); NULL: no authentication. Only a digest is kept. */
  const char *token;
  int auth_dispatch; /* the token also guards Dispatch(Stream) */
  /* TLS: PEM contents (not paths); cert+key NULL: plaintext. With
   * tls_client_ca_pem, clients must present a certificate it signed. */
  const char *tls_cert_pem, *tls_key_pem, *tls_client_ca_pem;
  /* The async delivery outbox (borrowed; outlives the server) for the
   * delivery RPCs and ListHandlers' disabled webhooks; NULL: no
   * --state-dir, those RPCs answer FAILED_PRECONDITION. */
  hd_outbox *outbox;
  /* The store (borrowed; outlives the server): grpc.health.v1 Check of
   * service "handlerd.database" says whether it answers. NULL: none. */
  hd_store *store;
} hd_server_config;

/* How much of the `left_ns` before a call's deadline handlerd keeps for
 * sending the reply: handlers are given the deadline minus this. */
int64_t hd_server_reply_margin_ns(int64_t left_ns);

/* Fills `cfg` with the defaults. */
void hd_server_config_init(hd_server_config *cfg);

/* Binds and starts serving. Borrows `reg` and `ctl` until hd_server_free.
 * HD_EIO with a message when the address cannot be bound. */
hd_err hd_server_start(const hd_server_config *cfg, hd_registry *reg,
                       hd_control *ctl, hd_server **out, char *msg,
                       size_t msg_size);
/* Replaces, for calls and TLS handshakes from now on, the bearer token
 * (NULL: keep it) and the TLS certificate chain and key with the client CA
 * (cert_pem and key_pem NULL: keep them). Strings are copied. HD_EINVAL
 * when the server was started without a token (or without TLS) or only
 * one of cert and key is given; a certificate gRPC cannot use is refused
 * at the next handshake (logged by gRPC) and the old one stays. */
hd_err hd_server_reload(hd_server *s, const char *token, const char *cert_pem,
                        const char *key_pem, const char *client_ca_pem);
/* Calls being served now, received and not yet answered, Health/Watch
 * streams included (a gauge for /metrics). */
int hd_server_calls_in_flight(const hd_server *s);
/* The bound port (useful with port 0). */
int hd_server_port(const hd_server *s);
/* Turns health NOT_SERVING and answers new calls UNAVAILABLE while the
 * calls in flight finish, for up to `drain_ms`; then stops gRPC (GOAWAY).
 * Calls still running then: `on_drain_timeout(ud)` runs (may be NULL;
 * handlerd stops the webhook engine there, so pending deliveries complete
 * with a "shutting down" result the calls can still send), calls get half
 * a second more, and the rest are cancelled. The queue threads keep
 * running, so asynchronous handlers of cancelled calls can still complete:
 * stop them (the webhook engine) next, then hd_server_free. Idempotent. */
void hd_server_shutdown(hd_server *s, int drain_ms,
                        void (*on_drain_timeout)(void *ud), void *ud);
/* Shuts down if needed, waits (up to 10 s) for the last call to end, stops
 * the queue threads and frees everything. */
void hd_server_free(hd_server *s);

#endif
