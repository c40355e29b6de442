/*
 * Standard Webhooks secrets and signatures, and the webhook-signature
 * header with a rotation's second signature.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "webhook_sign.h"

#include <stdlib.h>
#include <string.h>

/* The spec's published example, checked independently with python3's hmac
 * and `openssl dgst -mac HMAC` before being written down here. */
#define SPEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SPEC_MSG_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define SPEC_TIMESTAMP 1614265330
#define SPEC_BODY "{\"test\": 2432232314}"
#define SPEC_SIGNATURE "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

static void assert_secret_invalid(const char *secret, const char *want_msg) {
  unsigned char key[HD_SECRET_MAX_BYTES];
  size_t key_len = 12345;
  char msg[128] = "";

  assert_int_equal(hd_secret_parse(secret, key, &key_len, msg, sizeof msg),
                   HD_EINVAL);
  assert_int_equal(key_len, 12345); /* untouched on failure */
  if (!strstr(msg, want_msg))
    fail_msg("message \"%s\" does not mention \"%s\"", msg, want_msg);
}

static void test_sign_matches_spec_vector(void **state) {
  (void)state;
  unsigned char key[HD_SECRET_MAX_BYTES];
  size_t key_len = 0;
  char sig[HD_SIGNATURE_MAX];

  assert_int_equal(hd_secret_parse(SPEC_SECRET, key, &key_len, NULL, 0), HD_OK);
  assert_int_equal(key_len, 24);
  assert_int_equal(hd_webhook_sign(key, key_len, SPEC_MSG_ID, SPEC_TIMESTAMP,
                                   SPEC_BODY, strlen(SPEC_BODY), sig,
                                   sizeof sig),
                   HD_OK);
  assert_string_equal(sig, SPEC_SIGNATURE);
}

static void test_sign_changes_with_every_input(void **state) {
  (void)state;
  unsigned char key[HD_SECRET_MAX_BYTES];
  size_t key_len = 0;
  char sig[HD_SIGNATURE_MAX];
  const char *body = SPEC_BODY;
  size_t n = strlen(body);

  assert_int_equal(hd_secret_parse(SPEC_SECRET, key, &key_len, NULL, 0), HD_OK);
  assert_int_equal(hd_webhook_sign(key, key_len, "msg_other", SPEC_TIMESTAMP,
                                   body, n, sig, sizeof sig),
                   HD_OK);
  assert_string_not_equal(sig, SPEC_SIGNATURE);
  assert_int_equal(hd_webhook_sign(key, key_len, SPEC_MSG_ID,
                                   SPEC_TIMESTAMP + 1, body, n, sig,
                                   sizeof sig),
                   HD_OK);
  assert_string_not_equal(sig, SPEC_SIGNATURE);
  assert_int_equal(hd_webhook_sign(key, key_len, SPEC_MSG_ID, SPEC_TIMESTAMP,
                                   body, n - 1, sig, sizeof sig),
                   HD_OK);
  assert_string_not_equal(sig, SPEC_SIGNATURE);
  key[0] ^= 1;
  assert_int_equal(hd_webhook_sign(key, key_len, SPEC_MSG_ID, SPEC_TIMESTAMP,
                                   body, n, sig, sizeof sig),
                   HD_OK);
  assert_string_not_equal(sig, SPEC_SIGNATURE);
}

static void test_sign_refuses_small_output_buffer(void **state) {
  (void)state;
  unsigned char key[32] = {1};
  char sig[HD_SIGNATURE_MAX];

  assert_int_equal(hd_webhook_sign(key, sizeof key, "m", 1, "", 0, sig,
                                   HD_SIGNATURE_MAX - 1),
                   HD_EINVAL);
}

static void test_secret_without_prefix_is_refused(void **state) {
  (void)state;
  assert_secret_invalid("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_");
  assert_secret_invalid("whsek_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_");
  assert_secret_invalid("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_");
  assert_secret_invalid("", "whsec_");
}

static void test_secret_with_bad_base64_is_refused(void **state) {
  (void)state;
  /* a character outside the alphabet */
  assert_secret_invalid("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!", "base64");
  /* length not a multiple of 4 */
  assert_secret_invalid("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "base64");
  /* padding in the middle */
  assert_secret_invalid("whsec_MfKQ9r8GKYqr=wjUPD8ILPZIo2LaLaSw", "base64");
  /* surrounding whitespace, which EVP_DecodeBlock alone would skip */
  assert_secret_invalid("whsec_ MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "base64");
  assert_secret_invalid("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", "base64");
  /* nothing after the prefix */
  assert_secret_invalid("whsec_", "base64");
}

static void test_secret_key_length_limits(void **state) {
  (void)state;
  unsigned char key[HD_SECRET_MAX_BYTES];
  size_t key_len = 0;

  /* 23 bytes: one short of the spec example's 24 */
  assert_secret_invalid("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "shorter");
  /* 66 bytes */
  assert_secret_invalid("whsec_"
                        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                        "longer");
  /* exactly 64 bytes (86 chars + "==") is fine */
  assert_int_equal(hd_secret_parse("whsec_"
                                   "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                                   "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                                   "==",
                                   key, &key_len, NULL, 0),
                   HD_OK);
  assert_int_equal(key_len, 64);
}

/* The decoded length comes from the '=' padding, not EVP_DecodeBlock's
 * padded count: "AQID" is 3 bytes, "AQI=" 2, "AQ==" 1. */
static void test_secret_decoded_length_excludes_padding(void **state) {
  (void)state;
  unsigned char key[HD_SECRET_MAX_BYTES];
  size_t key_len = 0;
  const unsigned char want[26] = {1,  2,  3,  4,  5,  6,  7,  8,  9,
                                  10, 11, 12, 13, 14, 15, 16, 17, 18,
                                  19, 20, 21, 22, 23, 24, 25, 26};

  assert_int_equal(hd_secret_parse("whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGQ==",
                                   key, &key_len, NULL, 0),
                   HD_OK);
  assert_int_equal(key_len, 25);
  assert_memory_equal(key, want, 25);
  assert_int_equal(hd_secret_parse("whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRo=",
                                   key, &key_len, NULL, 0),
                   HD_OK);
  assert_int_equal(key_len, 26);
  assert_memory_equal(key, want, 26);
}

static void test_generated_secret_parses_to_32_bytes(void **state) {
  (void)state;
  unsigned char key[HD_SECRET_MAX_BYTES];
  size_t key_len = 0;
  char *s = hd_secret_generate();

  assert_non_null(s);
  assert_memory_equal(s, HD_SECRET_PREFIX, strlen(HD_SECRET_PREFIX));
  assert_int_equal(strlen(s), strlen(HD_SECRET_PREFIX) + 44);
  assert_int_equal(hd_secret_parse(s, key, &key_len, NULL, 0), HD_OK);
  assert_int_equal(key_len, 32);
  free(s);
}

static void test_generated_secrets_differ(void **state) {
  (void)state;
  char *a = hd_secret_generate();
  char *b = hd_secret_generate();

  assert_non_null(a);
  assert_non_null(b);
  assert_string_not_equal(a, b);
  free(a);
  free(b);
}

/* ---- two signatures during a rotation ------------------------------------ */

/* The new secret of the rotation tests: 25 bytes 1..25. Its signature of
 * the spec's message, computed with python3's hmac:
 *   hmac.new(bytes(range(1, 26)), b"<id>.<ts>.<body>", sha256) */
#define NEW_SECRET "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGQ=="
#define NEW_SIGNATURE "v1,E66iNThOi5VLPl6P+8zeD3KwGKDpvfs9x2fVwYmgGhc="
#define NOW_NS 1000000000000000000LL

typedef struct rotation {
  unsigned char key[HD_SECRET_MAX_BYTES], prev[HD_SECRET_MAX_BYTES];
  hd_sign_keys k;
} rotation;

/* The new secret, and the spec's as the previous one until `until_ns`. */
static void rotation_init(rotation *r, int64_t until_ns) {
  memset(r, 0, sizeof(*r));
  assert_int_equal(hd_secret_parse(NEW_SECRET, r->key, &r->k.key_len, NULL, 0),
                   HD_OK);
  assert_int_equal(
      hd_secret_parse(SPEC_SECRET, r->prev, &r->k.prev_key_len, NULL, 0),
      HD_OK);
  r->k.key = r->key;
  r->k.prev_key = r->prev;
  r->k.prev_until_ns = until_ns;
}

static void sign_header_ok(const rotation *r, int64_t now_ns, char *out) {
  assert_int_equal(hd_webhook_sign_header(
                       &r->k, now_ns, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY,
                       strlen(SPEC_BODY), out, HD_SIGNATURE_HEADER_MAX),
                   HD_OK);
}

/* During the overlap the header has both signatures, the new one first,
 * separated by a space: each verifies with its own secret (the old one is
 * the spec's published vector, the new one python3's). */
static void test_header_has_both_signatures_during_the_overlap(void **state) {
  (void)state;
  rotation r;
  char out[HD_SIGNATURE_HEADER_MAX];

  rotation_init(&r, NOW_NS + 1);
  sign_header_ok(&r, NOW_NS, out);
  assert_string_equal(out, NEW_SIGNATURE " " SPEC_SIGNATURE);
}

/* At the end of the window (and after it) only the new signature is sent:
 * the old secret no longer verifies anything. */
static void test_header_has_only_the_new_signature_after(void **state) {
  (void)state;
  rotation r;
  char out[HD_SIGNATURE_HEADER_MAX];

  rotation_init(&r, NOW_NS);
  sign_header_ok(&r, NOW_NS, out);
  assert_string_equal(out, NEW_SIGNATURE);
  sign_header_ok(&r, NOW_NS + 3600LL * 1000000000, out);
  assert_string_equal(out, NEW_SIGNATURE);
  assert_null(strstr(out, SPEC_SIGNATURE));
}

/* Without a rotation, one signature; no key at all, or too small a
 * buffer for two, is refused. */
static void test_header_without_rotation_and_bad_arguments(void **state) {
  (void)state;
  rotation r;
  char out[HD_SIGNATURE_HEADER_MAX];

  rotation_init(&r, NOW_NS + 1);
  r.k.prev_key_len = 0;
  sign_header_ok(&r, NOW_NS, out);
  assert_string_equal(out, NEW_SIGNATURE);
  assert_int_equal(hd_webhook_sign_header(
                       &r.k, NOW_NS, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY,
                       strlen(SPEC_BODY), out, HD_SIGNATURE_HEADER_MAX - 1),
                   HD_EINVAL);
  r.k.key_len = 0;
  assert_int_equal(hd_webhook_sign_header(&r.k, NOW_NS, SPEC_MSG_ID,
                                          SPEC_TIMESTAMP, SPEC_BODY,
                                          strlen(SPEC_BODY), out, sizeof(out)),
                   HD_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sign_matches_spec_vector),
      cmocka_unit_test(test_sign_changes_with_every_input),
      cmocka_unit_test(test_sign_refuses_small_output_buffer),
      cmocka_unit_test(test_secret_without_prefix_is_refused),
      cmocka_unit_test(test_secret_with_bad_base64_is_refused),
      cmocka_unit_test(test_secret_key_length_limits),
      cmocka_unit_test(test_secret_decoded_length_excludes_padding),
      cmocka_unit_test(test_generated_secret_parses_to_32_bytes),
      cmocka_unit_test(test_generated_secrets_differ),
      cmocka_unit_test(test_header_has_both_signatures_during_the_overlap),
      cmocka_unit_test(test_header_has_only_the_new_signature_after),
      cmocka_unit_test(test_header_without_rotation_and_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
