/*
 * handlerctl client library: a blocking C client for handlerd's gRPC API
 * (handlers.v1.Handlers, see proto/handlers/v1/handlers.proto), built on the
 * gRPC C core.
 *
 * Requests are described with small plain-C structs (hc_event,
 * hc_handler_spec) whose pointers are borrowed for the duration of the call.
 * Results come back as plain C structs allocated by the library; each kind
 * has exactly one function that frees it (hc_results_free,
 * hc_handler_list_free, hc_stream_reply_free, hc_free).
 *
 * A registered handler can be changed in place (hc_update_handler: same id,
 * same place under its key), lose one route (hc_remove_route) or have its
 * webhook's signing secret rotated with an overlap (hc_rotate_secret).
 *
 * Async webhook deliveries (ListDeliveries, GetDelivery, Redeliver, Replay,
 * EnableWebhook) are in "handlerctl/deliveries.h", which includes this.
 *
 * Every call returns an hc_err. HC_ERPC means the server answered with a
 * non-OK gRPC status; the code and message are then in the hc_status the
 * caller passed (optional everywhere: pass NULL when not needed).
 *
 * Thread safety: an hc_conn may be shared by threads; unary calls on it may
 * run concurrently (each call has its own completion queue). An hc_stream is
 * used by one thread at a time.
 *
 * Deadlines: every call takes `deadline_ms`: > 0 is that many milliseconds
 * from now, 0 is the connection default (hc_options.default_deadline_ms), < 0
 * is no deadline.
 */
#ifndef HANDLERCTL_CLIENT_H
#define HANDLERCTL_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes. Values are stable; HC_ELAST is never returned. */
typedef enum hc_err {
  HC_OK = 0,
  HC_EINVAL,   /* bad argument (NULL where not allowed, unknown enum value) */
  HC_ENOMEM,   /* out of memory */
  HC_ECONNECT, /* could not create the channel or reach the server */
  HC_ERPC,     /* the call ended with a non-OK gRPC status: see hc_status */
  HC_EPROTO,   /* the reply could not be parsed */
  HC_ECLOSED,  /* the stream has ended (hc_stream_finish has the status) */
  HC_EIO,      /* local I/O error (e.g. reading the TLS roots file) */
  HC_ELAST
} hc_err;

/* A static, human-readable description of `err`; never NULL. */
const char *hc_strerror(hc_err err);

/* The canonical name of gRPC status `code` ("OK", "NOT_FOUND", ...), or
 * "UNRECOGNIZED" for a number outside 0..16. Static; never NULL. */
const char *hc_status_code_name(int code);

/* The outcome of one call as the server reported it. `grpc_code` is the gRPC
 * status (0 OK, 3 INVALID_ARGUMENT, 5 NOT_FOUND, 12 UNIMPLEMENTED, ...), or
 * -1 when the call failed locally before producing a status (HC_EINVAL,
 * HC_ENOMEM, ...). `message` is the status message (NUL-terminated, cut to
 * fit); for HC_EPROTO it says what could not be parsed. */
typedef struct hc_status {
  int grpc_code;
  char message[512];
} hc_status;

/* ---- connections ------------------------------------------------------ */

typedef struct hc_conn hc_conn;

typedef struct hc_options {
  /* Path of a PEM file with the root certificates to trust: TLS. NULL:
   * an insecure (plaintext) channel. */
  const char *tls_ca_pem;
  /* Overrides the host name checked against the server certificate (TLS
   * only; for tests with a certificate for "localhost"). NULL: the host of
   * `addr`. */
  const char *tls_server_name;
  /* Sent as `authorization: Bearer <token>` on every call. NULL: none. */
  const char *bearer_token;
  /* The deadline of calls that pass deadline_ms == 0. 0: 10000 ms. */
  int default_deadline_ms;
  /* Nonzero: hc_connect returns without contacting the server; failures show
   * up as UNAVAILABLE (14) on the first call. Zero: hc_connect waits (up to
   * the default deadline) until the channel is connected. */
  int lazy_connect;
} hc_options;

/*
 * Opens a channel to `addr`: "host:port", any gRPC target URI such as
 * "unix:/path" or "dns:///name:port" (passed to gRPC unchanged), or several
 * replicas as a comma-separated list of IP addresses with ports, all IPv4
 * ("10.0.0.1:50051,10.0.0.2:50051") or all IPv6 ("[::1]:7001,[::1]:7002"),
 * at most 32; a list takes no host names (gRPC resolves one name per
 * target: give "dns:///name:port" alone for a name with several addresses).
 * Several addresses (a list, an "ipv4:"/"ipv6:" URI listing several) and
 * "dns:" names use gRPC's round_robin policy: calls are spread over the
 * replicas that are up. One "host:port" uses gRPC's default, pick_first.
 * On every channel the idempotent calls (hc_health_check,
 * hc_list_handlers, hc_get_stats, hc_list_deliveries, hc_get_delivery) are
 * retried by gRPC when they fail with UNAVAILABLE (up to 4 attempts within
 * their deadline, backoff 0.1 s doubling up to 1 s); the others never are.
 * `opts` may be NULL (insecure, no token, 10 s deadline); it is read during
 * the call only. Initialises gRPC (reference counted).
 * On success *out owns the connection: release it with hc_close().
 * Errors: HC_EINVAL (NULL addr/out, a bad address list: hc_addr_check says
 * why), HC_EIO (tls_ca_pem unreadable), HC_ENOMEM, HC_ECONNECT (the server
 * could not be reached or the TLS handshake failed, unless lazy_connect;
 * with several addresses: none could be). *out is NULL on error.
 */
hc_err hc_connect(const char *addr, const hc_options *opts, hc_conn **out);

/*
 * Checks `addr` as hc_connect reads it, without connecting: HC_OK, or
 * HC_EINVAL with the reason in `msg` (NUL-terminated, cut to fit; may be
 * NULL), naming the address at fault: an empty entry, a space, a missing or
 * bad port, a host name in a list, IPv4 and IPv6 mixed, too many entries.
 */
hc_err hc_addr_check(const char *addr, char *msg, size_t msg_len);

/* Closes the channel and frees `c` (NULL is ignored). Every hc_stream opened
 * on `c` must have been freed before. Drops the gRPC reference taken by
 * hc_connect. */
void hc_close(hc_conn *c);

/* ---- values and events ------------------------------------------------ */

/* Topic value types (the handlers.v1.TopicValue cases). */
typedef enum hc_value_type {
  HC_VALUE_NONE = 0, /* no value: the field is absent */
  HC_VALUE_JSON,     /* JSON text */
  HC_VALUE_STRING,   /* UTF-8 text */
  HC_VALUE_INT64,
  HC_VALUE_DOUBLE,
  HC_VALUE_BINARY,   /* bytes */
  HC_VALUE_RECORD_V2 /* bytes */
} hc_value_type;

/*
 * A topic value. JSON/STRING: `data` is NUL-terminated text; on input `len`
 * is ignored (strlen is used). BINARY/RECORD_V2: `data`/`len` (NULL is fine
 * when len is 0). In results the library owns `data`, always NUL-terminated
 * after `len` bytes, valid until the results are freed.
 */
typedef struct hc_value {
  hc_value_type type;
  const char *data;
  size_t len;
  int64_t i64;
  double f64;
} hc_value;

/* Builders for hc_value (the pointers are borrowed, not copied). */
static inline hc_value hc_value_json(const char *text) {
  hc_value v = {HC_VALUE_JSON, text, 0, 0, 0.0};
  return v;
}
static inline hc_value hc_value_string(const char *text) {
  hc_value v = {HC_VALUE_STRING, text, 0, 0, 0.0};
  return v;
}
static inline hc_value hc_value_int64(int64_t i) {
  hc_value v = {HC_VALUE_INT64, NULL, 0, i, 0.0};
  return v;
}
static inline hc_value hc_value_double(double d) {
  hc_value v = {HC_VALUE_DOUBLE, NULL, 0, 0, d};
  return v;
}
static inline hc_value hc_value_binary(const void *data, size_t len) {
  hc_value v = {HC_VALUE_BINARY, (const char *)data, len, 0, 0.0};
  return v;
}

/* Topic types, numbered as handlers.v1.TopicType. */
typedef enum hc_topic_type {
  HC_TOPIC_UNSPECIFIED = 0,
  HC_TOPIC_JSON = 1,
  HC_TOPIC_STRING = 2,
  HC_TOPIC_INT64 = 3,
  HC_TOPIC_DOUBLE = 4,
  HC_TOPIC_BINARY = 5,
  HC_TOPIC_TIME_SERIES = 6,
  HC_TOPIC_RECORD_V2 = 7
} hc_topic_type;

/* Unsubscribe reasons, numbered as handlers.v1.UnsubscribeReason. */
typedef enum hc_unsubscribe_reason {
  HC_UNSUB_REQUESTED = 0,
  HC_UNSUB_CONTROL = 1,
  HC_UNSUB_REMOVAL = 2,
  HC_UNSUB_AUTHORIZATION = 3,
  HC_UNSUB_UNKNOWN = 4,
  HC_UNSUB_BACK_PRESSURE = 5,
  HC_UNSUB_BRANCH_MAPPINGS = 6
} hc_unsubscribe_reason;

/* Which arguments an event carries (the DispatchRequest.args case). */
typedef enum hc_args_kind {
  HC_ARGS_DEFAULT = 0, /* from the event name: subscribe/close -> SUBSCRIBE,
                          update -> UPDATE, unsubscribe -> UNSUBSCRIBE,
                          error -> ERROR, response -> RESPONSE, custom ->
                          NONE */
  HC_ARGS_NONE,
  HC_ARGS_SUBSCRIBE, /* SubHandlerArgs */
  HC_ARGS_UPDATE,    /* UpdateArgs */
  HC_ARGS_UNSUBSCRIBE,
  HC_ARGS_ERROR,
  HC_ARGS_RESPONSE /* FilterResponseArgs */
} hc_args_kind;

/* A name/value pair (topic properties, webhook headers). Borrowed. */
typedef struct hc_property {
  const char *name;
  const char *value;
} hc_property;

/*
 * One event to dispatch. Zero-initialise it and set what applies; every
 * pointer is borrowed for the duration of the call. Fields by args kind:
 *   SUBSCRIBE, UPDATE, UNSUBSCRIBE: topic_path, value, topic_type +
 *     properties (the topic spec, sent when topic_type is not UNSPECIFIED or
 *     properties are given); UPDATE also old_value; UNSUBSCRIBE also reason.
 *   ERROR: error_code, error_description.
 *   RESPONSE: conversation_id, sender_session_id, topic_path (the request's
 *     path), expected, received, value (the response).
 * NULL strings are sent as empty strings.
 */
typedef struct hc_event {
  const char *key;
  const char *event; /* "update", "subscribe", ... or a custom name */
  hc_args_kind args;
  const char *topic_path;
  hc_value value;
  hc_value old_value;
  hc_topic_type topic_type;
  const hc_property *properties;
  size_t n_properties;
  hc_unsubscribe_reason reason;
  int32_t error_code;
  const char *error_description;
  const char *conversation_id;
  const char *sender_session_id;
  int32_t expected;
  int32_t received;
} hc_event;

/* ---- results ----------------------------------------------------------- */

/* What one handler produced. Strings are owned by the enclosing hc_results
 * and never NULL ("" when absent). */
typedef struct hc_result {
  char *handler_id;
  int ok;         /* nonzero: success; the error fields are 0/"" */
  int error_code; /* a gRPC status code when !ok */
  char *error_message;
  int http_status; /* webhooks: last HTTP status, 0 when none */
  int attempts;    /* webhooks: delivery attempts */
  hc_value value;  /* HC_VALUE_NONE when the handler returned nothing */
  int64_t duration_ns;
  int truncated; /* nonzero: value was cut to the size limit */
  /* Async webhooks: nonzero when the event was stored for delivery out of
   * band (ok is then nonzero and value absent); delivery_id names it for
   * hc_get_delivery. "" when not accepted. */
  int accepted;
  char *delivery_id;
} hc_result;

/* The results of one dispatch, in the order the handlers were added. */
typedef struct hc_results {
  size_t count;
  hc_result *items;
} hc_results;

/* Frees `r` and everything it points to (NULL is ignored). */
void hc_results_free(hc_results *r);

/*
 * Dispatch: sends `ev` to the handlers under ev->key and waits for their
 * results. On HC_OK *out holds the results (free with hc_results_free);
 * otherwise *out is NULL. Errors: HC_EINVAL (NULL conn/ev/out, or an
 * out-of-range enum in ev), HC_ENOMEM, HC_ERPC (e.g. 5 NOT_FOUND for an
 * unknown key, 3 INVALID_ARGUMENT), HC_EPROTO.
 */
hc_err hc_dispatch(hc_conn *c, const hc_event *ev, int deadline_ms,
                   hc_results **out, hc_status *st);

/* ---- handlers ----------------------------------------------------------- */

/* A webhook target; pointers borrowed. 0 means the server default. The
 * fields after `async` only mean something with `async` set. */
typedef struct hc_webhook {
  const char *url;
  const char *secret; /* "whsec_..." or NULL: unsigned */
  int new_secret;     /* nonzero: ask the server to generate one */
  const hc_property *headers;
  size_t n_headers;
  unsigned timeout_ms;
  unsigned max_attempts; /* does not apply to async (the schedule decides) */
  int binary_mode;
  /* Nonzero: deliver out of band, durably (needs a server with
   * --state-dir): Dispatch answers `accepted` with a delivery id. */
  int async;
  int ordered; /* one delivery at a time per ordering key (topic path) */
  /* Delays in ms before the attempts after the first (the first is at
   * once): {1000, 300000} retries after 1 s, then 5 min. None: the
   * server's schedule. */
  const uint32_t *retry_schedule_ms;
  size_t n_retry_schedule;
  unsigned max_inflight; /* deliveries in flight at once; 0: no limit */
  double max_rps;        /* attempts started per second; 0: no limit */
} hc_webhook;

/* A target: set exactly one of `local` (a function name such as "echo") or
 * `webhook`. Both NULL: no target. */
typedef struct hc_target {
  const char *local;
  const hc_webhook *webhook;
} hc_target;

/* One route of an event-stream handler: event name -> target. */
typedef struct hc_route {
  const char *event;
  hc_target target;
} hc_route;

/*
 * What to register under `key`: a simple handler (`target`, optionally
 * filtered by `events`) or an event-stream handler (`routes`). Everything
 * given is sent as is, so the server decides about contradictions (both a
 * target and routes is INVALID_ARGUMENT there).
 */
typedef struct hc_handler_spec {
  const char *key;
  hc_target target;
  const hc_route *routes;
  size_t n_routes;
  const char *const *events;
  size_t n_events;
  /* A Diffusion topic selector (">a/b", "?a/.*", "*a/b.*", "#s1////s2",
   * a trailing "/" or "//" on a pattern for its descendants): only events
   * whose topic path it selects reach the handler (events without a topic
   * path are not filtered). Sent as is; the server checks it
   * (INVALID_ARGUMENT naming the position). NULL or "": every topic. */
  const char *selector;
  /* Nonzero: the server fills an update's absent old_value with the last
   * value this handler saw for the same topic path. */
  int derive_old_value;
} hc_handler_spec;

/*
 * AddHandler. On HC_OK *id_out receives the new handler id (malloc'd; free
 * with hc_free) and, when secret_out is not NULL, *secret_out the generated
 * webhook secret or NULL when none was generated (free with hc_free).
 * Errors: HC_EINVAL, HC_ENOMEM, HC_ERPC (3 for a bad key, unknown function,
 * bad URL), HC_EPROTO. The out pointers are NULL on error.
 */
hc_err hc_add_handler(hc_conn *c, const hc_handler_spec *spec, int deadline_ms,
                      char **id_out, char **secret_out, hc_status *st);

/* Shorthand for hc_add_handler with a simple handler whose target is the
 * local function `function`. Same ownership of *id_out. */
hc_err hc_add_local(hc_conn *c, const char *key, const char *function,
                    int deadline_ms, char **id_out, hc_status *st);

/* RemoveHandler: unregisters handler `id` under `key`. HC_ERPC with
 * 5 NOT_FOUND when there is no such key or id. */
hc_err hc_remove_handler(hc_conn *c, const char *key, const char *id,
                         int deadline_ms, hc_status *st);

/* RemoveHandler of one route: removes the route of event `route` from
 * event-stream handler `id` under `key` (the seed's remove(sub_handler));
 * removing its last route removes the handler. NULL or "": the whole
 * handler, as hc_remove_handler. HC_ERPC with 5 NOT_FOUND for no such key
 * or id, or naming the route when the handler has none for `route`. */
hc_err hc_remove_route(hc_conn *c, const char *key, const char *id,
                       const char *route, int deadline_ms, hc_status *st);

/*
 * UpdateHandler: replaces the registration of handler `id` under
 * spec->key with `spec`, whole (as hc_add_handler would make it), keeping
 * its id and its place under the key; all or nothing. A webhook with no
 * secret and new_secret 0 keeps the secret (and any rotation in progress)
 * of the webhook at the same place: the target, or the route of the same
 * event. On HC_OK, when secret_out is not NULL, *secret_out is the secret
 * generated for new_secret (free with hc_free) or NULL when none was.
 * Errors: HC_EINVAL, HC_ENOMEM, HC_ERPC (5 NOT_FOUND: no such key or id;
 * 3 INVALID_ARGUMENT as AddHandler: the handler is then unchanged),
 * HC_EPROTO.
 */
hc_err hc_update_handler(hc_conn *c, const char *id,
                         const hc_handler_spec *spec, int deadline_ms,
                         char **secret_out, hc_status *st);

/* Which webhook's secret to rotate, and how. Pointers borrowed. */
typedef struct hc_rotate_spec {
  const char *key;
  const char *handler_id;
  const char *route;  /* event-stream: the route's event; NULL: the target */
  int64_t overlap_ms; /* how long the old secret stays valid; 0: 24 h */
  const char *secret; /* the new "whsec_..." secret; NULL: generated */
} hc_rotate_spec;

/*
 * RotateSecret: gives a webhook a new signing secret; during the overlap
 * every request carries both signatures ("v1,<new> v1,<old>"), then only
 * the new one. On HC_OK *secret_out is the new secret (malloc'd, free with
 * hc_free; the server shows it only here) and *expires_at_ms_out (optional)
 * when the old one stops being sent, Unix ms. Errors: HC_EINVAL (NULL
 * conn/spec/secret_out, a negative overlap), HC_ENOMEM, HC_ERPC (5
 * NOT_FOUND: no such handler or route; 9 FAILED_PRECONDITION: not a
 * webhook; 3 INVALID_ARGUMENT: a bad secret or overlap), HC_EPROTO.
 */
hc_err hc_rotate_secret(hc_conn *c, const hc_rotate_spec *spec, int deadline_ms,
                        char **secret_out, int64_t *expires_at_ms_out,
                        hc_status *st);

typedef enum hc_handler_kind {
  HC_KIND_UNSPECIFIED = 0,
  HC_KIND_SIMPLE = 1,
  HC_KIND_EVENT_STREAM = 2
} hc_handler_kind;

/* A route as listed: event -> "local:<name>" or "webhook:<url>". */
typedef struct hc_route_info {
  char *event;
  char *target;
} hc_route_info;

/* A registered handler as ListHandlers shows it. Owned by the list. */
typedef struct hc_handler_info {
  char *key;
  char *handler_id;
  hc_handler_kind kind;
  char *target; /* SIMPLE: "local:<name>" or "webhook:<url>"; else "" */
  hc_route_info *routes;
  size_t n_routes;
  char **events; /* SIMPLE: the event filter; none: all events */
  size_t n_events;
  int secret_set;
  int async; /* nonzero: the webhook target (or a route's) is async */
  /* Async webhooks disabled after failing for the server's
   * --disable-after, by route or target name; hc_enable_webhook resumes
   * them. */
  char **disabled;
  size_t n_disabled;
  char *selector;       /* the topic selector; "" when none */
  int derive_old_value; /* nonzero: old_value is derived */
} hc_handler_info;

typedef struct hc_handler_list {
  size_t count;
  hc_handler_info *items; /* sorted by key, then in order of addition */
} hc_handler_list;

/* Frees `l` and everything it points to (NULL is ignored). */
void hc_handler_list_free(hc_handler_list *l);

/* ListHandlers: the handlers under `key` (NULL or "": every key). On HC_OK
 * *out is the list (free with hc_handler_list_free). HC_ERPC 5 NOT_FOUND for
 * an unknown key. */
hc_err hc_list_handlers(hc_conn *c, const char *key, int deadline_ms,
                        hc_handler_list **out, hc_status *st);

/* ---- stats --------------------------------------------------------------- */

/* One figure of GetStats, as /metrics shows it. Owned by the hc_stats. */
typedef struct hc_stat {
  char *name;   /* "handlerd_dispatches_total", "..._bucket", ... */
  char *labels; /* 'event="update",code="OK"' as Prometheus prints them, in
                   key order; "" when none */
  double value;
} hc_stat;

typedef struct hc_stats {
  size_t count;
  hc_stat *items; /* in the server's order */
} hc_stats;

/* Frees `s` and everything it points to (NULL is ignored). */
void hc_stats_free(hc_stats *s);

/* GetStats: the server's counters and gauges. On HC_OK *out is the list
 * (free with hc_stats_free). Needs the token when the server has one. */
hc_err hc_get_stats(hc_conn *c, int deadline_ms, hc_stats **out, hc_status *st);

/* ---- health -------------------------------------------------------------- */

/* grpc.health.v1 serving status. */
typedef enum hc_serving_status {
  HC_HEALTH_UNKNOWN = 0,
  HC_HEALTH_SERVING = 1,
  HC_HEALTH_NOT_SERVING = 2,
  HC_HEALTH_SERVICE_UNKNOWN = 3
} hc_serving_status;

/* grpc.health.v1.Health/Check for `service` (NULL or "": the server as a
 * whole). On HC_OK *status_out (may be NULL) is the serving status. A server
 * without the health service gives HC_ERPC with 12 UNIMPLEMENTED. */
hc_err hc_health_check(hc_conn *c, const char *service, int deadline_ms,
                       hc_serving_status *status_out, hc_status *st);

/* ---- raw calls ------------------------------------------------------------
 */

/*
 * Sends `len` bytes of `req` (NULL when len is 0) as the one message of a
 * unary call to `method` (a full path, "/handlers.v1.Handlers/Dispatch") and
 * waits for the reply. On HC_OK *reply and *reply_len (both optional) hold the
 * reply's bytes (malloc'd, free with hc_free; NULL when empty). HC_ERPC with
 * the server's status otherwise. For tests: lets garbage reach the server.
 */
hc_err hc_call_raw(hc_conn *c, const char *method, const void *req, size_t len,
                   void **reply, size_t *reply_len, int deadline_ms,
                   hc_status *st);

/* Frees memory the library handed out as a plain pointer (ids, secrets, raw
 * replies). NULL is ignored. */
void hc_free(void *p);

/* ---- streaming dispatch
 * ------------------------------------------------------ */

/*
 * A DispatchStream session: events go out with hc_stream_send, replies come
 * back in request order with hc_stream_recv.
 *
 * Flow control: the stream always keeps one receive outstanding, and while a
 * send waits for flow control it also accepts replies and queues them in
 * memory. So a caller may send any number of events before reading a reply
 * without deadlocking against the server; the cost is memory for the
 * replies not yet read. No thread is started.
 */
typedef struct hc_stream hc_stream;

/* One reply: `sequence` is the 0-based position of the request it answers;
 * `code` is 0 with `results`, or the error code with `message`. Owned by the
 * caller: free with hc_stream_reply_free. */
typedef struct hc_stream_reply {
  uint64_t sequence;
  int code;
  char *message; /* never NULL */
  hc_results results;
} hc_stream_reply;

/* Frees a reply (NULL is ignored). */
void hc_stream_reply_free(hc_stream_reply *r);

/* Starts a DispatchStream call; `deadline_ms` covers the whole stream. On
 * HC_OK *out is the stream (free with hc_stream_free; `c` must outlive it).
 * Errors: HC_EINVAL, HC_ENOMEM (*out is NULL), HC_ECLOSED (the call failed
 * at once; *out is still set: hc_stream_finish gives the status, then
 * hc_stream_free). */
hc_err hc_stream_open(hc_conn *c, int deadline_ms, hc_stream **out);

/* Sends one event (borrowed for the call). Blocks until the message passed
 * flow control (queueing replies meanwhile). HC_ECLOSED when the call has
 * ended or the sending side was closed; HC_EINVAL, HC_ENOMEM. */
hc_err hc_stream_send(hc_stream *s, const hc_event *ev);

/* Receives the next reply, blocking until one is there. On HC_OK *out is the
 * reply (free with hc_stream_reply_free). HC_ECLOSED: the server ended the
 * stream and every reply has been read; HC_EPROTO: a malformed reply (the
 * stream goes on). *out is NULL on error. */
hc_err hc_stream_recv(hc_stream *s, hc_stream_reply **out);

/* Half-closes: tells the server no more events will come. Idempotent. */
hc_err hc_stream_close_send(hc_stream *s);

/* Half-closes if needed, discards replies not yet read, waits for the
 * server's status and stores it in `st`. HC_OK when the status is OK,
 * HC_ERPC otherwise. Call it once; then hc_stream_free. */
hc_err hc_stream_finish(hc_stream *s, hc_status *st);

/* Frees the stream, cancelling the call when it has not finished. NULL is
 * ignored. */
void hc_stream_free(hc_stream *s);

#ifdef __cplusplus
}
#endif
#endif
