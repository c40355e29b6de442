/*
 * The bearer token (kept only as a digest, compared in constant time) and
 * the TLS credentials, with their reload.
 */
#include "rpc.h"

#include <openssl/crypto.h>
#include <string.h>
#include <strings.h>

/* gRPC 1.51 asserts that a fetched config has client roots, even when no
 * client certificate is requested: then the server's own chain stands in,
 * unused. */
static const char *roots_for(const char *client_ca_pem, const char *cert_pem) {
  return client_ca_pem ? client_ca_pem : cert_pem;
}

/* gRPC asks at every handshake: a certificate set by hd_server_reload is
 * handed over once. */
static grpc_ssl_certificate_config_reload_status
fetch_tls(void *ud, grpc_ssl_server_certificate_config **config) {
  rpc_auth_state *a = ud;
  pthread_mutex_lock(&a->lock);
  grpc_ssl_server_certificate_config *next = a->tls_pending;
  a->tls_pending = NULL;
  pthread_mutex_unlock(&a->lock);
  if (!next)
    return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
  *config = next;
  return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
}

void rpc_auth_init(rpc_auth_state *a, const hd_server_config *cfg,
                   grpc_server_credentials **creds) {
  pthread_mutex_init(&a->lock, NULL);
  if (cfg->token) {
    a->have_token = 1;
    SHA256((const unsigned char *)cfg->token, strlen(cfg->token),
           a->token_digest);
  }
  if (cfg->tls_cert_pem && cfg->tls_key_pem) {
    /* Through a fetcher, so SIGHUP can hand gRPC a new certificate. */
    grpc_ssl_pem_key_cert_pair pair = {cfg->tls_key_pem, cfg->tls_cert_pem};
    a->tls = 1;
    a->tls_pending = grpc_ssl_server_certificate_config_create(
        roots_for(cfg->tls_client_ca_pem, cfg->tls_cert_pem), &pair, 1);
    grpc_ssl_server_credentials_options *opts =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            cfg->tls_client_ca_pem
                ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            fetch_tls, a);
    *creds = grpc_ssl_server_credentials_create_with_options(opts);
  } else {
    *creds = grpc_insecure_server_credentials_create();
  }
}

void rpc_auth_destroy(rpc_auth_state *a) {
  if (a->tls_pending)
    grpc_ssl_server_certificate_config_destroy(a->tls_pending);
  pthread_mutex_destroy(&a->lock);
}

hd_err hd_server_reload(hd_server *s, const char *token, const char *cert_pem,
                        const char *key_pem, const char *client_ca_pem) {
  rpc_auth_state *a = &s->auth;
  if ((token && !a->have_token) || (cert_pem && !a->tls) ||
      !cert_pem != !key_pem)
    return HD_EINVAL;
  grpc_ssl_server_certificate_config *next = NULL;
  if (cert_pem) {
    grpc_ssl_pem_key_cert_pair pair = {key_pem, cert_pem};
    next = grpc_ssl_server_certificate_config_create(
        roots_for(client_ca_pem, cert_pem), &pair, 1);
    if (!next)
      return HD_ENOMEM;
  }
  pthread_mutex_lock(&a->lock);
  if (token)
    SHA256((const unsigned char *)token, strlen(token), a->token_digest);
  if (next) {
    if (a->tls_pending)
      grpc_ssl_server_certificate_config_destroy(a->tls_pending);
    a->tls_pending = next;
  }
  pthread_mutex_unlock(&a->lock);
  return HD_OK;
}

static int needs_token(const hd_server *srv, const rpc_method *m) {
  if (!srv->auth.have_token)
    return 0;
  switch (m->auth) {
  case RPC_AUTH_CONTROL:
    return 1;
  case RPC_AUTH_DISPATCH:
    return srv->cfg.auth_dispatch;
  case RPC_AUTH_NONE:
    break;
  }
  return 0;
}

/* Compares digests so the time taken says nothing about the token. */
static int token_ok(rpc_auth_state *a, const grpc_metadata_array *md) {
  static const char prefix[] = "Bearer ";
  const size_t plen = sizeof(prefix) - 1;
  for (size_t i = 0; i < md->count; i++) {
    if (grpc_slice_str_cmp(md->metadata[i].key, "authorization") != 0)
      continue;
    const unsigned char *v = GRPC_SLICE_START_PTR(md->metadata[i].value);
    size_t len = GRPC_SLICE_LENGTH(md->metadata[i].value);
    if (len < plen || strncasecmp((const char *)v, prefix, plen) != 0)
      return 0;
    unsigned char digest[SHA256_DIGEST_LENGTH], want[SHA256_DIGEST_LENGTH];
    SHA256(v + plen, len - plen, digest);
    pthread_mutex_lock(&a->lock);
    memcpy(want, a->token_digest, sizeof(want));
    pthread_mutex_unlock(&a->lock);
    return CRYPTO_memcmp(digest, want, sizeof(digest)) == 0;
  }
  return 0;
}

int rpc_auth_allows(hd_server *srv, const call *c) {
  return !c->method || !needs_token(srv, c->method) ||
         token_ok(&srv->auth, &c->md);
}
