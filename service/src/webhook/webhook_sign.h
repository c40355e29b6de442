/*
 * Standard Webhooks signatures (https://www.standardwebhooks.com/):
 * "v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>", keyed with the
 * bytes of a "whsec_<base64>" secret. HMAC by OpenSSL.
 */
#ifndef HD_WEBHOOK_SIGN_H
#define HD_WEBHOOK_SIGN_H

#include "handlerd/handlerd.h"

#define HD_SECRET_PREFIX "whsec_"
#define HD_SECRET_MAX_BYTES 64 /* decoded key bytes */
#define HD_SIGNATURE_MAX 64    /* "v1," + base64 of 32 bytes + NUL fits */
/* The webhook-signature header's value: up to two signatures. */
#define HD_SIGNATURE_HEADER_MAX (2 * HD_SIGNATURE_MAX)

/* Decodes "whsec_<base64>" into `key` (HD_SECRET_MAX_BYTES room). HD_EINVAL
 * (message in `msg`) when the prefix is missing, the base64 is bad, or the
 * key is shorter than 24 or longer than 64 bytes. */
hd_err hd_secret_parse(const char *secret, unsigned char *key, size_t *key_len,
                       char *msg, size_t msg_size);

/* A new random secret "whsec_<base64 of 32 random bytes>", malloc'd (caller
 * frees, after wiping it). NULL on failure. */
char *hd_secret_generate(void);

/* Writes "v1,<base64 signature>" for (msg_id, timestamp, body) into `out`
 * (at least HD_SIGNATURE_MAX bytes). */
hd_err hd_webhook_sign(const unsigned char *key, size_t key_len,
                       const char *msg_id, int64_t timestamp, const void *body,
                       size_t body_len, char *out, size_t out_size);

/* The keys a request is signed with: the current one and, during a
 * rotation's overlap (RotateSecret), the previous one until prev_until_ns
 * (CLOCK_REALTIME). Borrowed. */
typedef struct hd_sign_keys {
  const unsigned char *key; /* key_len 0: requests are not signed */
  size_t key_len;
  const unsigned char *prev_key; /* prev_key_len 0: no rotation */
  size_t prev_key_len;
  int64_t prev_until_ns;
} hd_sign_keys;

/* The webhook-signature header's value for a request sent at `now_ns`
 * (CLOCK_REALTIME): "v1,<signature with key>", then " v1,<signature with
 * prev_key>" while now_ns < prev_until_ns, so a receiver that knows either
 * secret verifies the request (Standard Webhooks allows several
 * space-separated signatures) and the old secret stops working at the end
 * of the window, not before. `out` has at least HD_SIGNATURE_HEADER_MAX
 * bytes. HD_EINVAL (no key, bad arguments), HD_EIO (the HMAC failed). */
hd_err hd_webhook_sign_header(const hd_sign_keys *k, int64_t now_ns,
                              const char *msg_id, int64_t timestamp,
                              const void *body, size_t body_len, char *out,
                              size_t out_size);

#endif
