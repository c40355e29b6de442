/*
 * Standard Webhooks signatures. The receiver recomputes the HMAC over the
 * same "<id>.<timestamp>.<body>" bytes, so the body passed here must be the
 * exact bytes sent: never re-serialise between signing and sending.
 *
 * Base64 is OpenSSL's (EVP_EncodeBlock/EVP_DecodeBlock), which is strict
 * about neither whitespace nor '=' placement the way we want, so the secret's
 * text is checked against the alphabet first and the decoded length is
 * derived from the padding ourselves.
 */
#include "webhook_sign.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HD_SECRET_MIN_BYTES 24 /* the spec's own example key is 24 bytes */
#define HD_SECRET_GEN_BYTES 32

static hd_err fail(char *msg, size_t msg_size, const char *why) {
  if (msg && msg_size)
    snprintf(msg, msg_size, "secret: %s", why);
  return HD_EINVAL;
}

static int b64_char(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* Checks that `s` (n bytes) is padded standard base64 and returns how many
 * bytes it decodes to, or -1. EVP_DecodeBlock would skip surrounding
 * whitespace and count '=' as zero bytes, both of which we must not accept
 * silently. */
static long b64_decoded_len(const char *s, size_t n) {
  size_t pad = 0;
  if (n == 0 || n % 4 != 0)
    return -1;
  if (s[n - 1] == '=')
    pad = s[n - 2] == '=' ? 2 : 1;
  for (size_t i = 0; i < n - pad; i++)
    if (!b64_char((unsigned char)s[i]))
      return -1;
  return (long)(n / 4 * 3 - pad);
}

hd_err hd_secret_parse(const char *secret, unsigned char *key, size_t *key_len,
                       char *msg, size_t msg_size) {
  const size_t plen = sizeof(HD_SECRET_PREFIX) - 1;
  /* Room for the padded decode of the longest allowed key. */
  unsigned char buf[(HD_SECRET_MAX_BYTES + 2) / 3 * 3];

  if (!secret || strncmp(secret, HD_SECRET_PREFIX, plen) != 0)
    return fail(msg, msg_size, "must start with \"" HD_SECRET_PREFIX "\"");
  const char *b64 = secret + plen;
  size_t n = strlen(b64);
  if (n > (HD_SECRET_MAX_BYTES + 2) / 3 * 4)
    return fail(msg, msg_size, "key longer than 64 bytes");
  long len = b64_decoded_len(b64, n);
  if (len < 0)
    return fail(msg, msg_size, "not valid base64 after \"whsec_\"");
  if (len < HD_SECRET_MIN_BYTES)
    return fail(msg, msg_size, "key shorter than 24 bytes");
  if (len > HD_SECRET_MAX_BYTES)
    return fail(msg, msg_size, "key longer than 64 bytes");
  if (EVP_DecodeBlock(buf, (const unsigned char *)b64, (int)n) < 0) {
    OPENSSL_cleanse(buf, sizeof buf);
    return fail(msg, msg_size, "not valid base64 after \"whsec_\"");
  }
  memcpy(key, buf, (size_t)len);
  *key_len = (size_t)len;
  OPENSSL_cleanse(buf, sizeof buf);
  return HD_OK;
}

char *hd_secret_generate(void) {
  unsigned char raw[HD_SECRET_GEN_BYTES];
  const size_t plen = sizeof(HD_SECRET_PREFIX) - 1;
  size_t size = plen + (sizeof raw + 2) / 3 * 4 + 1;
  char *s = malloc(size);

  if (!s)
    return NULL;
  if (RAND_bytes(raw, sizeof raw) != 1) {
    free(s);
    return NULL;
  }
  memcpy(s, HD_SECRET_PREFIX, plen);
  EVP_EncodeBlock((unsigned char *)s + plen, raw, sizeof raw);
  OPENSSL_cleanse(raw, sizeof raw);
  return s;
}

hd_err hd_webhook_sign(const unsigned char *key, size_t key_len,
                       const char *msg_id, int64_t timestamp, const void *body,
                       size_t body_len, char *out, size_t out_size) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  char prefix[64]; /* the "<id>." part is streamed separately */
  int n;

  if (!key || !msg_id || (!body && body_len) || !out ||
      out_size < HD_SIGNATURE_MAX)
    return HD_EINVAL;
  n = snprintf(prefix, sizeof prefix, ".%" PRId64 ".", timestamp);
  if (n < 0 || (size_t)n >= sizeof prefix)
    return HD_EINVAL;

  EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                          (char *)"SHA256", 0),
                         OSSL_PARAM_construct_end()};
  size_t mac_len = 0;
  /* Streamed so a large body is never copied into one signing buffer. */
  int ok =
      ctx && EVP_MAC_init(ctx, key, key_len, params) == 1 &&
      EVP_MAC_update(ctx, (const unsigned char *)msg_id, strlen(msg_id)) == 1 &&
      EVP_MAC_update(ctx, (const unsigned char *)prefix, (size_t)n) == 1 &&
      (body_len == 0 ||
       EVP_MAC_update(ctx, (const unsigned char *)body, body_len) == 1) &&
      EVP_MAC_final(ctx, mac, &mac_len, sizeof mac) == 1;
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(hmac);
  if (!ok)
    return HD_EIO;

  memcpy(out, "v1,", 3);
  EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)mac_len);
  return HD_OK;
}

hd_err hd_webhook_sign_header(const hd_sign_keys *k, int64_t now_ns,
                              const char *msg_id, int64_t timestamp,
                              const void *body, size_t body_len, char *out,
                              size_t out_size) {
  hd_err err;
  size_t n;

  if (!k || k->key_len == 0 || !out || out_size < HD_SIGNATURE_HEADER_MAX)
    return HD_EINVAL;
  err = hd_webhook_sign(k->key, k->key_len, msg_id, timestamp, body, body_len,
                        out, out_size);
  if (err != HD_OK || k->prev_key_len == 0 || now_ns >= k->prev_until_ns)
    return err;
  /* The new signature first: receivers try them in order, and the new
   * secret is the one that stays. */
  n = strlen(out);
  out[n] = ' ';
  return hd_webhook_sign(k->prev_key, k->prev_key_len, msg_id, timestamp, body,
                         body_len, out + n + 1, out_size - n - 1);
}
