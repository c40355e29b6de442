/*
 * Who may call: the bearer token the control RPCs (and, with
 * --auth-dispatch, Dispatch) require, and the TLS server credentials; both
 * replaced by hd_server_reload (SIGHUP).
 */
#ifndef HD_AUTH_H
#define HD_AUTH_H

#include "server.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <openssl/sha.h>
#include <pthread.h>

typedef struct call call;

typedef struct rpc_auth_state {
  int have_token;
  int tls;
  /* Guards token_digest and tls_pending, which SIGHUP replaces. */
  pthread_mutex_t lock;
  unsigned char token_digest[SHA256_DIGEST_LENGTH]; /* never the token */
  /* Handed to gRPC at its next handshake (fetch_tls), then NULL. */
  grpc_ssl_server_certificate_config *tls_pending;
} rpc_auth_state;

/* Keeps the digest of cfg->token and makes the server's credentials (TLS
 * with cfg's certificate, or plaintext) into `creds`, for
 * grpc_server_add_http2_port. */
void rpc_auth_init(rpc_auth_state *a, const hd_server_config *cfg,
                   grpc_server_credentials **creds);
void rpc_auth_destroy(rpc_auth_state *a);

/* 0 when call `c` needs the token and does not carry it. */
int rpc_auth_allows(hd_server *srv, const call *c);

#endif
