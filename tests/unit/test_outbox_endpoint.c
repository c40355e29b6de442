/*
 * Unit tests: an async webhook's name and its settings in the outbox
 * (outbox/outbox_endpoint.c). A webhook rebuilt by UpdateHandler or
 * RotateSecret adds its new settings before the old ones are dropped, and
 * the rebuild may be abandoned (its commit failed): the name must deliver
 * with the old settings until the old handler goes, and never with those
 * of an abandoned rebuild. Looked at
 * through the outbox's internals (the name's current settings), with an
 * outbox that is never run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "outbox_internal.h"

typedef struct fixture {
  hd_webhook_engine *engine;
  hd_journal journal; /* never used: the outbox is not run */
  hd_outbox *o;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  hd_webhook_engine_config ecfg;
  hd_outbox_config cfg;

  if (!f)
    return -1;
  hd_webhook_engine_config_init(&ecfg);
  ecfg.instance = "test";
  hd_outbox_config_init(&cfg);
  if (hd_webhook_engine_start(&ecfg, &f->engine) != HD_OK ||
      hd_outbox_new(&cfg, &f->journal, f->engine, &f->o) != HD_OK)
    return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;

  hd_outbox_stop(f->o);
  hd_webhook_engine_stop(f->engine);
  free(f);
  return 0;
}

/* Adds settings for (h-1, "update") delivering to `url`. */
static hd_outbox_endpoint *add(fixture *f, const char *url) {
  hd_endpoint_spec spec = {
      .handler_id = "h-000000000001",
      .route = "update",
      .key = "k",
      .url = url,
      .timeout_ms = 1000,
  };
  hd_outbox_endpoint *ep = hd_outbox_endpoint_add(f->o, &spec);

  assert_non_null(ep);
  return ep;
}

/* The URL the name delivers to now, or "" when it has no settings (its
 * deliveries are dead). */
static const char *current(fixture *f) {
  ob_name *n = ob_name_get(f->o, "h-000000000001", "update", 0);

  assert_non_null(n);
  return n->ep ? n->ep->url : "";
}

/* An update: the new settings are made while the old handler is still
 * registered, and apply once it is dropped (after the commit and the
 * swap): not before. */
static void test_a_later_add_applies_once_the_earlier_is_dropped(void **state) {
  fixture *f = *state;
  hd_outbox_endpoint *old = add(f, "http://example.test/old");
  hd_outbox_endpoint *new = add(f, "http://example.test/new");

  assert_string_equal(current(f), "http://example.test/old");
  hd_outbox_endpoint_drop(f->o, old);
  assert_string_equal(current(f), "http://example.test/new");
  hd_outbox_endpoint_drop(f->o, new);
  assert_string_equal(current(f), "");
}

/* An update whose commit failed: the new handle is dropped while the old
 * one is still held; its settings never applied, and the old webhook goes
 * on delivering. */
static void test_an_abandoned_rebuild_never_applies(void **state) {
  fixture *f = *state;
  hd_outbox_endpoint *old = add(f, "http://example.test/old");
  hd_outbox_endpoint *abandoned = add(f, "http://example.test/new");

  hd_outbox_endpoint_drop(f->o, abandoned);
  assert_string_equal(current(f), "http://example.test/old");
  /* The next update is committed: its settings follow the old ones. */
  hd_outbox_endpoint *next = add(f, "http://example.test/next");
  assert_string_equal(current(f), "http://example.test/old");
  hd_outbox_endpoint_drop(f->o, old);
  assert_string_equal(current(f), "http://example.test/next");
  hd_outbox_endpoint_drop(f->o, next);
  assert_string_equal(current(f), "");
}

/* Several held at once (a handler kept by a dispatch in flight while two
 * updates follow), dropped out of order: the oldest still held applies;
 * settings dropped never come back. */
static void test_the_oldest_still_held_applies(void **state) {
  fixture *f = *state;
  hd_outbox_endpoint *a = add(f, "http://example.test/a");
  hd_outbox_endpoint *b = add(f, "http://example.test/b");
  hd_outbox_endpoint *c = add(f, "http://example.test/c");

  hd_outbox_endpoint_drop(f->o, b);
  assert_string_equal(current(f), "http://example.test/a");
  hd_outbox_endpoint_drop(f->o, a);
  assert_string_equal(current(f), "http://example.test/c");
  hd_outbox_endpoint_drop(f->o, c);
  assert_string_equal(current(f), "");
}

/* The previous key of a rotation is copied into the settings, as the key
 * is, with the end of its window. */
static void test_settings_keep_a_rotation(void **state) {
  fixture *f = *state;
  const unsigned char key[24] = {1}, prev[32] = {2};
  hd_endpoint_spec spec = {
      .handler_id = "h-000000000001",
      .route = "update",
      .url = "http://example.test/r",
      .sign_key = key,
      .sign_key_len = sizeof(key),
      .prev_sign_key = prev,
      .prev_sign_key_len = sizeof(prev),
      .prev_until_ns = 12345,
  };
  hd_outbox_endpoint *ep = hd_outbox_endpoint_add(f->o, &spec);

  assert_non_null(ep);
  assert_int_equal(ep->sign_key_len, sizeof(key));
  assert_int_equal(ep->prev_sign_key_len, sizeof(prev));
  assert_memory_equal(ep->prev_sign_key, prev, sizeof(prev));
  assert_int_equal(ep->prev_until_ns, 12345);
  hd_outbox_endpoint_drop(f->o, ep);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_a_later_add_applies_once_the_earlier_is_dropped),
      T(test_an_abandoned_rebuild_never_applies),
      T(test_the_oldest_still_held_applies),
      T(test_settings_keep_a_rotation),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
