/*
 * Unit tests: the registry (key -> handler set), including a concurrency
 * smoke test of dispatch against add/remove.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "handlerd/handlerd.h"

#include "test_util.h"

/* Sayers made here; setup and teardown check each was destroyed. */
static atomic_int created;

static hd_handler *counted_sayer(const char *word) {
  atomic_fetch_add(&created, 1);
  return sayer(word);
}

static int setup(void **state) {
  hd_registry *reg = NULL;

  atomic_store(&created, 0);
  atomic_store(&destroyed, 0);
  if (hd_registry_new(&reg) != HD_OK)
    return -1;
  *state = reg;
  return 0;
}

static int teardown(void **state) {
  hd_registry_free(*state);
  /* Every handler a test made is gone, exactly once. */
  return atomic_load(&created) == atomic_load(&destroyed) ? 0 : -1;
}

/* Adds a new simple handler under `key`, keeping only the registry's ref. */
static hd_handler *add_sayer(hd_registry *reg, const char *key,
                             const char *word) {
  hd_handler *h = counted_sayer(word);

  assert_int_equal(hd_registry_add(reg, key, h), HD_OK);
  hd_handler_unref(h);
  return h;
}

struct capture {
  int calls;
  hd_results *results;
};

static void capture_done(hd_results *rs, void *ud) {
  struct capture *c = ud;

  c->calls++;
  c->results = rs;
}

static void test_registry_dispatch_unknown_key_is_enokey(void **state) {
  hd_registry *reg = *state;
  hd_event ev = {.key = "nobody", .name = "update"};
  struct capture c = {0, NULL};
  hd_handler *set = NULL;

  add_sayer(reg, "somebody", "x");
  assert_int_equal(hd_registry_dispatch(reg, &ev, capture_done, &c), HD_ENOKEY);
  assert_int_equal(c.calls, 0);
  assert_int_equal(hd_registry_get(reg, "nobody", &set), HD_ENOKEY);
  assert_null(set);
}

static void test_registry_dispatch_runs_every_member(void **state) {
  hd_registry *reg = *state;
  hd_event ev = {.key = "k", .name = "update"};
  struct capture c = {0, NULL};
  hd_handler *a = add_sayer(reg, "k", "a");
  hd_handler *b = add_sayer(reg, "k", "b");

  add_sayer(reg, "other", "o");
  assert_int_equal(hd_registry_key_count(reg), 2);
  assert_int_equal(hd_registry_dispatch(reg, &ev, capture_done, &c), HD_OK);
  assert_int_equal(c.calls, 1);
  assert_int_equal(hd_results_count(c.results), 2);
  assert_string_equal(hd_results_at(c.results, 0)->handler_id,
                      hd_handler_id(a));
  assert_string_equal(hd_results_at(c.results, 0)->value.u.bytes.data, "a");
  assert_string_equal(hd_results_at(c.results, 1)->handler_id,
                      hd_handler_id(b));
  hd_results_free(c.results);
}

static void test_registry_add_rejects_bad_key(void **state) {
  hd_registry *reg = *state;
  char key[HD_KEY_MAX + 2];
  hd_handler *h = counted_sayer("x");

  assert_int_equal(hd_registry_add(reg, "", h), HD_EINVAL);
  assert_int_equal(hd_registry_add(reg, NULL, h), HD_EINVAL);
  memset(key, 'k', sizeof(key) - 1);
  key[HD_KEY_MAX + 1] = '\0'; /* one byte too long */
  assert_int_equal(hd_registry_add(reg, key, h), HD_EINVAL);
  assert_int_equal(hd_registry_key_count(reg), 0);
  key[HD_KEY_MAX] = '\0'; /* exactly the limit */
  assert_int_equal(hd_registry_add(reg, key, h), HD_OK);
  assert_int_equal(hd_registry_key_count(reg), 1);
  hd_handler_unref(h);
}

static void test_registry_add_duplicate_is_eexist(void **state) {
  hd_registry *reg = *state;
  hd_handler *h = add_sayer(reg, "k", "x");

  assert_int_equal(hd_registry_add(reg, "k", h), HD_EEXIST);
  /* The same handler may serve another key. */
  assert_int_equal(hd_registry_add(reg, "k2", h), HD_OK);
  assert_int_equal(hd_registry_key_count(reg), 2);
}

static void test_registry_remove_reports_enokey_and_enotfound(void **state) {
  hd_registry *reg = *state;
  hd_handler *h = add_sayer(reg, "k", "x");

  assert_int_equal(hd_registry_remove(reg, "absent", hd_handler_id(h)),
                   HD_ENOKEY);
  assert_int_equal(hd_registry_remove(reg, "k", "h-ffffffffffff"),
                   HD_ENOTFOUND);
  assert_int_equal(hd_registry_key_count(reg), 1);
}

static void test_registry_remove_last_member_drops_key(void **state) {
  hd_registry *reg = *state;
  hd_event ev = {.key = "k", .name = "update"};
  struct capture c = {0, NULL};
  hd_handler *a = add_sayer(reg, "k", "a");
  hd_handler *b = add_sayer(reg, "k", "b");
  char a_id[HD_HANDLER_ID_MAX + 1];

  strcpy(a_id, hd_handler_id(a));
  assert_int_equal(hd_registry_remove(reg, "k", a_id), HD_OK);
  assert_int_equal(atomic_load(&destroyed), 1); /* released at once */
  assert_int_equal(hd_registry_key_count(reg), 1);
  assert_int_equal(hd_registry_remove(reg, "k", a_id), HD_ENOTFOUND);
  assert_int_equal(hd_registry_remove(reg, "k", hd_handler_id(b)), HD_OK);
  assert_int_equal(hd_registry_key_count(reg), 0);
  assert_int_equal(hd_registry_dispatch(reg, &ev, capture_done, &c), HD_ENOKEY);
  assert_int_equal(hd_registry_remove(reg, "k", a_id), HD_ENOKEY);
  assert_int_equal(c.calls, 0);
}

struct listing {
  char lines[8][64];
  int n;
};

static void list_fn(const char *key, hd_handler *member, void *ud) {
  struct listing *l = ud;

  snprintf(l->lines[l->n++], sizeof(l->lines[0]), "%s/%s", key,
           hd_handler_id(member));
}

static void test_registry_foreach_in_key_then_insertion_order(void **state) {
  hd_registry *reg = *state;
  struct listing l = {.n = 0};
  hd_handler *b1 = add_sayer(reg, "b", "1");
  hd_handler *a1 = add_sayer(reg, "a", "1");
  hd_handler *b2 = add_sayer(reg, "b", "2");
  hd_handler *c1 = add_sayer(reg, "c", "1");
  char want[64];

  hd_handler_set_id(b1, "zz"); /* insertion order, not id order */
  hd_handler_set_id(b2, "aa");
  assert_int_equal(hd_registry_foreach(reg, NULL, list_fn, &l), HD_OK);
  assert_int_equal(l.n, 4);
  snprintf(want, sizeof(want), "a/%s", hd_handler_id(a1));
  assert_string_equal(l.lines[0], want);
  assert_string_equal(l.lines[1], "b/zz");
  assert_string_equal(l.lines[2], "b/aa");
  snprintf(want, sizeof(want), "c/%s", hd_handler_id(c1));
  assert_string_equal(l.lines[3], want);

  l.n = 0;
  assert_int_equal(hd_registry_foreach(reg, "b", list_fn, &l), HD_OK);
  assert_int_equal(l.n, 2);
  assert_string_equal(l.lines[0], "b/zz");
  l.n = 0;
  assert_int_equal(hd_registry_foreach(reg, "nope", list_fn, &l), HD_ENOKEY);
  assert_int_equal(l.n, 0);
}

/* foreach runs `fn` outside the lock: it may change the registry. */
static void remove_during_foreach(const char *key, hd_handler *member,
                                  void *ud) {
  assert_int_equal(hd_registry_remove(ud, key, hd_handler_id(member)), HD_OK);
}

static void test_registry_foreach_callback_may_remove(void **state) {
  hd_registry *reg = *state;

  add_sayer(reg, "a", "1");
  add_sayer(reg, "a", "2");
  add_sayer(reg, "b", "1");
  assert_int_equal(hd_registry_foreach(reg, NULL, remove_during_foreach, reg),
                   HD_OK);
  assert_int_equal(hd_registry_key_count(reg), 0);
  assert_int_equal(atomic_load(&destroyed), 3);
}

static void test_registry_get_returns_a_set_reference(void **state) {
  hd_registry *reg = *state;
  hd_handler *h = add_sayer(reg, "k", "x");
  hd_handler *set = NULL;

  assert_int_equal(hd_registry_get(reg, "k", &set), HD_OK);
  assert_string_equal(hd_handler_kind(set), "set");
  assert_int_equal(hd_set_size(set), 1);
  /* Dropping the key leaves our reference working. */
  assert_int_equal(hd_registry_remove(reg, "k", hd_handler_id(h)), HD_OK);
  assert_int_equal(hd_set_size(set), 0);
  hd_handler_unref(set);
}

/* ---- concurrency smoke test ------------------------------------------------
 * Dispatchers hit key "k" (which keeps a steady member) and key "j" (which
 * the churner creates and drops over and over) while the churner adds and
 * removes handlers under both. Threads only count; the main thread asserts
 * (cmocka's asserts are not meant for other threads). */

enum { DISPATCHERS = 4, DISPATCHES = 3000, CHURNS = 1500 };

struct smoke {
  hd_registry *reg;
  atomic_int started_k;
  atomic_int started;
  atomic_int completed;
  atomic_int failures;
};

static void count_done(hd_results *rs, void *ud) {
  struct smoke *s = ud;

  for (size_t i = 0; i < hd_results_count(rs); i++) {
    if (hd_results_at(rs, i)->err != HD_OK)
      atomic_fetch_add(&s->failures, 1);
  }
  hd_results_free(rs);
  atomic_fetch_add(&s->completed, 1);
}

static void *dispatcher(void *arg) {
  struct smoke *s = arg;
  hd_event k = {.key = "k", .name = "update"};
  hd_event j = {.key = "j", .name = "update"};

  for (int i = 0; i < DISPATCHES; i++) {
    hd_err err = hd_registry_dispatch(s->reg, &k, count_done, s);
    if (err == HD_OK) {
      atomic_fetch_add(&s->started_k, 1);
      atomic_fetch_add(&s->started, 1);
    } else {
      atomic_fetch_add(&s->failures, 1);
    }
    err = hd_registry_dispatch(s->reg, &j, count_done, s);
    if (err == HD_OK)
      atomic_fetch_add(&s->started, 1);
    else if (err != HD_ENOKEY) /* ENOKEY: the churn dropped "j" */
      atomic_fetch_add(&s->failures, 1);
  }
  return NULL;
}

static void *churner(void *arg) {
  struct smoke *s = arg;

  for (int i = 0; i < CHURNS; i++) {
    const char *key = i % 2 ? "j" : "k";
    hd_handler *h = counted_sayer("churn");
    char id[HD_HANDLER_ID_MAX + 1];

    strcpy(id, hd_handler_id(h));
    if (hd_registry_add(s->reg, key, h) != HD_OK)
      atomic_fetch_add(&s->failures, 1);
    hd_handler_unref(h); /* the registry (and dispatches) own it now */
    if (hd_registry_remove(s->reg, key, id) != HD_OK)
      atomic_fetch_add(&s->failures, 1);
  }
  return NULL;
}

static void test_registry_concurrent_dispatch_and_churn(void **state) {
  struct smoke s = {.reg = *state};
  pthread_t d[DISPATCHERS], c;

  atomic_init(&s.started_k, 0);
  atomic_init(&s.started, 0);
  atomic_init(&s.completed, 0);
  atomic_init(&s.failures, 0);
  add_sayer(s.reg, "k", "steady");
  assert_int_equal(pthread_create(&c, NULL, churner, &s), 0);
  for (int i = 0; i < DISPATCHERS; i++)
    assert_int_equal(pthread_create(&d[i], NULL, dispatcher, &s), 0);
  for (int i = 0; i < DISPATCHERS; i++)
    pthread_join(d[i], NULL);
  pthread_join(c, NULL);

  assert_int_equal(atomic_load(&s.failures), 0);
  /* The steady member keeps "k": every dispatch to it ran. */
  assert_int_equal(atomic_load(&s.started_k), DISPATCHERS * DISPATCHES);
  /* Every started dispatch completed exactly once. */
  assert_int_equal(atomic_load(&s.completed), atomic_load(&s.started));
  /* "j" went with its last member; "k" stayed. */
  assert_int_equal(hd_registry_key_count(s.reg), 1);
  /* Every churned handler was destroyed once no dispatch held it. */
  assert_int_equal(atomic_load(&destroyed), CHURNS);
  assert_int_equal(atomic_load(&created), CHURNS + 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(
          test_registry_dispatch_unknown_key_is_enokey, setup, teardown),
      cmocka_unit_test_setup_teardown(test_registry_dispatch_runs_every_member,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_registry_add_rejects_bad_key, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_registry_add_duplicate_is_eexist,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_registry_remove_reports_enokey_and_enotfound, setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_registry_remove_last_member_drops_key, setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_registry_foreach_in_key_then_insertion_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_registry_foreach_callback_may_remove,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_registry_get_returns_a_set_reference,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_registry_concurrent_dispatch_and_churn, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
