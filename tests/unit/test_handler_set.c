/*
 * Unit tests: the "set" kind, including members that complete later on
 * another thread.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "handlerd/handlerd.h"

#include "registry_select.h"
#include "test_util.h"

static const hd_event update_ev = {.key = "k", .name = "update"};

/* ---- a test-only asynchronous kind ----------------------------------------
 * handle() starts a thread and returns; the thread waits until the test
 * opens the gate, then completes with one string result. */

struct async {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int open;
  const char *word;
  pthread_t threads[64];
  int n_threads;
};

struct async_job {
  hd_handler *h;
  struct async *a;
  hd_done_fn *done;
  void *done_data;
};

static void *async_thread(void *arg) {
  struct async_job job = *(struct async_job *)arg;
  hd_results *rs;
  hd_result *r;

  free(arg);
  pthread_mutex_lock(&job.a->lock);
  while (!job.a->open)
    pthread_cond_wait(&job.a->cond, &job.a->lock);
  pthread_mutex_unlock(&job.a->lock);
  rs = hd_results_new();
  r = hd_results_append(rs);
  strcpy(r->handler_id, hd_handler_id(job.h));
  hd_result_set_string(r, job.a->word);
  job.done(rs, job.done_data);
  return NULL;
}

static hd_err async_handle(hd_handler *h, const hd_event *ev, hd_done_fn *done,
                           void *done_data) {
  struct async *a = hd_handler_user_data(h);
  struct async_job *job = malloc(sizeof(*job));

  (void)ev;
  assert_non_null(job);
  *job = (struct async_job){h, a, done, done_data};
  pthread_mutex_lock(&a->lock);
  assert_true(a->n_threads < 64);
  assert_int_equal(
      pthread_create(&a->threads[a->n_threads++], NULL, async_thread, job), 0);
  pthread_mutex_unlock(&a->lock);
  return HD_OK;
}

static void async_destroy(hd_handler *h) {
  (void)h;
  atomic_fetch_add(&destroyed, 1);
}

static const hd_handler_ops async_ops = {
    .kind = "async", .handle = async_handle, .destroy = async_destroy};

static hd_handler *async_new(struct async *a, const char *word, int open) {
  hd_handler *h = NULL;

  memset(a, 0, sizeof(*a));
  pthread_mutex_init(&a->lock, NULL);
  pthread_cond_init(&a->cond, NULL);
  a->word = word;
  a->open = open;
  assert_int_equal(hd_handler_new(&async_ops, a, &h), HD_OK);
  return h;
}

static void async_open(struct async *a) {
  pthread_mutex_lock(&a->lock);
  a->open = 1;
  pthread_cond_broadcast(&a->cond);
  pthread_mutex_unlock(&a->lock);
}

/* Waits for every thread started so far. */
static void async_join(struct async *a) {
  for (int i = 0; i < a->n_threads; i++)
    pthread_join(a->threads[i], NULL);
  a->n_threads = 0;
}

static void async_finish(struct async *a) {
  async_join(a);
  pthread_cond_destroy(&a->cond);
  pthread_mutex_destroy(&a->lock);
}

/* A completion the test can wait on. */
struct waiter {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int calls;
  hd_results *results;
};

static void waiter_done(hd_results *rs, void *ud) {
  struct waiter *w = ud;

  pthread_mutex_lock(&w->lock);
  w->calls++;
  w->results = rs;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

static int waiter_calls(struct waiter *w) {
  int n;

  pthread_mutex_lock(&w->lock);
  n = w->calls;
  pthread_mutex_unlock(&w->lock);
  return n;
}

static hd_results *waiter_wait(struct waiter *w) {
  pthread_mutex_lock(&w->lock);
  while (w->calls == 0)
    pthread_cond_wait(&w->cond, &w->lock);
  pthread_mutex_unlock(&w->lock);
  return w->results;
}

/* ---- tests ------------------------------------------------------------------
 */

static void test_set_empty_completes_with_no_results(void **state) {
  hd_handler *set;
  hd_results *rs = NULL;

  (void)state;
  assert_int_equal(hd_set_new(&set), HD_OK);
  assert_string_equal(hd_handler_kind(set), "set");
  assert_int_equal(hd_set_size(set), 0);
  assert_int_equal(hd_handler_run_sync(set, &update_ev, &rs), HD_OK);
  assert_int_equal(hd_results_count(rs), 0);
  hd_results_free(rs);
  hd_handler_unref(set);
}

static void test_set_aggregates_results_in_member_order(void **state) {
  const char *words[] = {"one", "two", "three", "four", "five"};
  hd_handler *set, *m[5];
  hd_results *rs = NULL;

  (void)state;
  assert_int_equal(hd_set_new(&set), HD_OK);
  for (int i = 0; i < 5; i++) {
    m[i] = sayer(words[i]);
    assert_int_equal(hd_set_add(set, m[i]), HD_OK);
  }
  assert_int_equal(hd_set_size(set), 5);
  assert_int_equal(hd_handler_run_sync(set, &update_ev, &rs), HD_OK);
  assert_int_equal(hd_results_count(rs), 5);
  for (int i = 0; i < 5; i++) {
    hd_result *r = hd_results_at(rs, (size_t)i);
    assert_string_equal(r->value.u.bytes.data, words[i]);
    assert_string_equal(r->handler_id, hd_handler_id(m[i]));
    assert_true(r->duration_ns > 0);
  }
  hd_results_free(rs);
  for (int i = 0; i < 5; i++)
    hd_handler_unref(m[i]);
  hd_handler_unref(set);
}

static void test_set_duplicate_member_rejected(void **state) {
  hd_handler *set, *a = sayer("a"), *twin = sayer("twin");

  (void)state;
  assert_int_equal(hd_set_new(&set), HD_OK);
  assert_int_equal(hd_set_add(set, a), HD_OK);
  assert_int_equal(hd_set_add(set, a), HD_EEXIST);
  assert_int_equal(hd_handler_set_id(twin, hd_handler_id(a)), HD_OK);
  assert_int_equal(hd_set_add(set, twin), HD_EEXIST);
  assert_int_equal(hd_set_add(set, set), HD_EINVAL);
  assert_int_equal(hd_set_add(a, twin), HD_EINVAL); /* not a set */
  assert_int_equal(hd_set_size(set), 1);
  hd_handler_unref(a);
  hd_handler_unref(twin);
  hd_handler_unref(set);
}

static void test_set_remove_unknown_member_fails(void **state) {
  hd_handler *set, *a = sayer("a");

  (void)state;
  assert_int_equal(hd_set_new(&set), HD_OK);
  assert_int_equal(hd_set_add(set, a), HD_OK);
  assert_int_equal(hd_set_remove(set, "h-000000000000"), HD_ENOTFOUND);
  assert_int_equal(hd_handler_remove(set, "nope"), HD_ENOTFOUND);
  assert_int_equal(hd_set_size(set), 1);
  hd_handler_unref(a);
  hd_handler_unref(set);
}

static void test_set_removed_member_is_released_and_not_called(void **state) {
  hd_handler *set, *a = sayer("a"), *b = sayer("b");
  hd_results *rs = NULL;

  (void)state;
  atomic_store(&destroyed, 0);
  assert_int_equal(hd_set_new(&set), HD_OK);
  assert_int_equal(hd_set_add(set, a), HD_OK);
  assert_int_equal(hd_set_add(set, b), HD_OK);
  hd_handler_unref(a);
  assert_int_equal(hd_handler_remove(set, hd_handler_id(a)), HD_OK);
  assert_int_equal(atomic_load(&destroyed), 1);
  assert_int_equal(hd_set_size(set), 1);
  assert_int_equal(hd_handler_run_sync(set, &update_ev, &rs), HD_OK);
  assert_int_equal(hd_results_count(rs), 1);
  assert_string_equal(hd_results_at(rs, 0)->value.u.bytes.data, "b");
  hd_results_free(rs);
  hd_handler_unref(b);
  hd_handler_unref(set);
  assert_int_equal(atomic_load(&destroyed), 2);
}

static void test_set_member_handle_error_becomes_failed_result(void **state) {
  static const hd_handler_ops refusing_ops = {.kind = "refusing",
                                              .handle = refusing_handle};
  hd_handler *set, *a = sayer("a"), *bad, *c = sayer("c");
  hd_results *rs = NULL;
  hd_result *r;

  (void)state;
  assert_int_equal(hd_handler_new(&refusing_ops, NULL, &bad), HD_OK);
  assert_int_equal(hd_set_new(&set), HD_OK);
  assert_int_equal(hd_set_add(set, a), HD_OK);
  assert_int_equal(hd_set_add(set, bad), HD_OK);
  assert_int_equal(hd_set_add(set, c), HD_OK);
  assert_int_equal(hd_handler_run_sync(set, &update_ev, &rs), HD_OK);
  assert_int_equal(hd_results_count(rs), 3);
  assert_int_equal(hd_results_at(rs, 0)->err, HD_OK);
  r = hd_results_at(rs, 1);
  assert_int_equal(r->err, HD_EBUSY);
  assert_string_equal(r->handler_id, hd_handler_id(bad));
  assert_non_null(r->message);
  assert_non_null(strstr(r->message, hd_handler_id(bad)));
  assert_int_equal(hd_results_at(rs, 2)->err, HD_OK);
  assert_string_equal(hd_results_at(rs, 2)->value.u.bytes.data, "c");
  hd_results_free(rs);
  hd_handler_unref(a);
  hd_handler_unref(bad);
  hd_handler_unref(c);
  hd_handler_unref(set);
}

static hd_err sleep_200ms(const hd_event *ev, void *ud, hd_result *out) {
  (void)ev, (void)ud, (void)out;
  usleep(200 * 1000);
  return HD_OK;
}

/* A member that fails to start is timed alone: not with the 200 ms a
 * sibling before it spent running. */
static void test_set_failed_member_is_timed_alone(void **state) {
  static const hd_handler_ops refusing_ops = {.kind = "refusing",
                                              .handle = refusing_handle};
  hd_handler *set, *slow = NULL, *bad;
  hd_results *rs = NULL;

  (void)state;
  assert_int_equal(hd_simple_new(sleep_200ms, NULL, NULL, &slow), HD_OK);
  assert_int_equal(hd_handler_new(&refusing_ops, NULL, &bad), HD_OK);
  assert_int_equal(hd_set_new(&set), HD_OK);
  assert_int_equal(hd_set_add(set, slow), HD_OK);
  assert_int_equal(hd_set_add(set, bad), HD_OK);
  assert_int_equal(hd_handler_run_sync(set, &update_ev, &rs), HD_OK);
  assert_int_equal(hd_results_count(rs), 2);
  assert_true(hd_results_at(rs, 0)->duration_ns >= 200 * 1000000LL);
  assert_int_equal(hd_results_at(rs, 1)->err, HD_EBUSY);
  assert_true(hd_results_at(rs, 1)->duration_ns > 0);
  assert_true(hd_results_at(rs, 1)->duration_ns < 100 * 1000000LL);
  hd_results_free(rs);
  hd_handler_unref(slow);
  hd_handler_unref(bad);
  hd_handler_unref(set);
}

static void test_set_completes_when_async_member_completes_later(void **state) {
  struct async a;
  struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0,
                     NULL};
  hd_handler *set, *slow = async_new(&a, "slow", 0), *fast = sayer("fast");
  hd_results *rs;

  (void)state;
  assert_int_equal(hd_set_new(&set), HD_OK);
  assert_int_equal(hd_set_add(set, slow), HD_OK);
  assert_int_equal(hd_set_add(set, fast), HD_OK);
  assert_int_equal(hd_handler_handle(set, &update_ev, waiter_done, &w), HD_OK);
  /* handle() returned while the slow member is still held at its gate. */
  assert_int_equal(waiter_calls(&w), 0);
  async_open(&a);
  rs = waiter_wait(&w);
  async_finish(&a);
  assert_int_equal(waiter_calls(&w), 1);
  assert_int_equal(hd_results_count(rs), 2);
  /* Insertion order, not completion order. */
  assert_string_equal(hd_results_at(rs, 0)->value.u.bytes.data, "slow");
  assert_string_equal(hd_results_at(rs, 0)->handler_id, hd_handler_id(slow));
  assert_string_equal(hd_results_at(rs, 1)->value.u.bytes.data, "fast");
  hd_results_free(rs);
  hd_handler_unref(slow);
  hd_handler_unref(fast);
  hd_handler_unref(set);
}

/* Many members completing at once from their own threads, some before the
 * set's handle() returns: exactly one completion with every result. */
static void test_set_concurrent_completions_complete_once(void **state) {
  enum { MEMBERS = 6, ROUNDS = 40 };
  struct async a[MEMBERS];
  hd_handler *set, *m[MEMBERS];

  (void)state;
  atomic_store(&destroyed, 0);
  assert_int_equal(hd_set_new(&set), HD_OK);
  for (int i = 0; i < MEMBERS; i++) {
    m[i] = async_new(&a[i], "x", 1); /* gate open: race the loop */
    assert_int_equal(hd_set_add(set, m[i]), HD_OK);
  }
  for (int round = 0; round < ROUNDS; round++) {
    struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0,
                       NULL};
    hd_results *rs;

    assert_int_equal(hd_handler_handle(set, &update_ev, waiter_done, &w),
                     HD_OK);
    rs = waiter_wait(&w);
    assert_int_equal(hd_results_count(rs), MEMBERS);
    for (int i = 0; i < MEMBERS; i++)
      assert_string_equal(hd_results_at(rs, (size_t)i)->handler_id,
                          hd_handler_id(m[i]));
    hd_results_free(rs);
    for (int i = 0; i < MEMBERS; i++)
      async_join(&a[i]);
    assert_int_equal(waiter_calls(&w), 1);
  }
  hd_handler_unref(set);
  assert_int_equal(atomic_load(&destroyed), 0); /* we still hold them */
  for (int i = 0; i < MEMBERS; i++) {
    hd_handler_unref(m[i]);
    async_finish(&a[i]);
  }
  assert_int_equal(atomic_load(&destroyed), MEMBERS);
}

static void collect(hd_handler *member, void *ud) {
  hd_handler ***out = ud;

  *(*out)++ = member;
}

static void test_set_foreach_in_insertion_order(void **state) {
  hd_handler *set, *m[3] = {sayer("z"), sayer("a"), sayer("m")};
  hd_handler *seen[3] = {NULL, NULL, NULL}, **cursor = seen;

  (void)state;
  assert_int_equal(hd_set_new(&set), HD_OK);
  for (int i = 0; i < 3; i++)
    assert_int_equal(hd_set_add(set, m[i]), HD_OK);
  hd_set_foreach(set, collect, &cursor);
  assert_int_equal(cursor - seen, 3);
  for (int i = 0; i < 3; i++) {
    assert_ptr_equal(seen[i], m[i]);
    hd_handler_unref(m[i]);
  }
  hd_handler_unref(set);
}

/* ---- selectors -----------------------------------------------------------
 */

static hd_selector *sel(const char *text) {
  hd_selector *s = NULL;
  char msg[256];
  assert_int_equal(hd_selector_compile(text, &s, msg, sizeof(msg)), HD_OK);
  return s;
}

/* The words of the results of dispatching an update of `path`, joined by
 * spaces ("" for none), into buf. */
static const char *words_for(hd_handler *set, const char *path, char *buf,
                             size_t size) {
  hd_event ev = update_ev;
  hd_results *rs = NULL;

  ev.args_kind = path ? HD_ARGS_UPDATE : HD_ARGS_NONE;
  ev.topic.path = path;
  assert_int_equal(hd_handler_run_sync(set, &ev, &rs), HD_OK);
  buf[0] = '\0';
  for (size_t i = 0; i < hd_results_count(rs); i++) {
    if (i > 0)
      strncat(buf, " ", size - strlen(buf) - 1);
    strncat(buf, hd_results_at(rs, i)->value.u.bytes.data,
            size - strlen(buf) - 1);
  }
  hd_results_free(rs);
  return buf;
}

static void test_set_selectors_filter_by_topic_path_in_order(void **state) {
  const char *words[] = {"all", "eur", "prices", "star", "usd", "set"};
  const char *sels[] = {NULL,       ">prices/eur", "?prices//",
                        "*p.*/e.*", ">prices/usd", "#>x////>prices/usd"};
  hd_handler *set, *m[6];
  char buf[128];

  (void)state;
  assert_int_equal(hd_set_new(&set), HD_OK);
  for (int i = 0; i < 6; i++) {
    hd_selector *s = sels[i] ? sel(sels[i]) : NULL;
    m[i] = sayer(words[i]);
    assert_int_equal(hd_set_add_selected(set, m[i], s), HD_OK);
    hd_selector_unref(s); /* the set holds its own */
  }
  assert_string_equal(words_for(set, "prices/eur", buf, sizeof(buf)),
                      "all eur prices star");
  assert_string_equal(words_for(set, "prices/usd", buf, sizeof(buf)),
                      "all prices usd set");
  assert_string_equal(words_for(set, "other", buf, sizeof(buf)), "all");
  /* No topic path: no filtering. */
  assert_string_equal(words_for(set, NULL, buf, sizeof(buf)),
                      "all eur prices star usd set");
  /* A removed selected member leaves the index. */
  assert_int_equal(hd_set_remove(set, hd_handler_id(m[1])), HD_OK);
  assert_string_equal(words_for(set, "prices/eur", buf, sizeof(buf)),
                      "all prices star");
  for (int i = 0; i < 6; i++)
    hd_handler_unref(m[i]);
  hd_handler_unref(set);
}

static void test_set_replace_keeps_place_and_swaps_selector(void **state) {
  hd_handler *set, *a = sayer("a"), *b = sayer("b"), *c = sayer("c");
  hd_handler *b2 = sayer("b2");
  char buf[64];

  (void)state;
  assert_int_equal(hd_set_new(&set), HD_OK);
  assert_int_equal(hd_set_add(set, a), HD_OK);
  assert_int_equal(hd_set_add(set, b), HD_OK);
  assert_int_equal(hd_set_add(set, c), HD_OK);
  assert_int_equal(hd_handler_set_id(b2, hd_handler_id(b)), HD_OK);
  hd_selector *only_x = sel(">x");
  assert_int_equal(hd_set_replace(set, hd_handler_id(b), b2, only_x), HD_OK);
  hd_selector_unref(only_x);
  assert_int_equal(hd_set_size(set), 3);
  assert_string_equal(words_for(set, "x", buf, sizeof(buf)), "a b2 c");
  assert_string_equal(words_for(set, "y", buf, sizeof(buf)), "a c");
  /* And back to no selector, still in the middle. */
  assert_int_equal(hd_set_replace(set, hd_handler_id(b), b, NULL), HD_OK);
  assert_string_equal(words_for(set, "y", buf, sizeof(buf)), "a b c");
  assert_int_equal(hd_set_replace(set, "h-nope", b2, NULL), HD_ENOTFOUND);
  hd_handler_unref(a);
  hd_handler_unref(b);
  hd_handler_unref(c);
  hd_handler_unref(b2);
  hd_handler_unref(set);
}

/* Many selectors under one set: each event reaches only its own. */
static void test_set_many_selectors(void **state) {
  enum { N = 2000 };
  static char word[N][8]; /* sayers borrow their word */
  hd_handler *set, **m = calloc(N, sizeof(*m));
  char text[64], buf[64];

  (void)state;
  assert_non_null(m);
  assert_int_equal(hd_set_new(&set), HD_OK);
  for (int i = 0; i < N; i++) {
    snprintf(text, sizeof(text), ">t/%d", i);
    snprintf(word[i], sizeof(word[i]), "w%d", i);
    m[i] = sayer(word[i]);
    hd_selector *s = sel(text);
    assert_int_equal(hd_set_add_selected(set, m[i], s), HD_OK);
    hd_selector_unref(s);
  }
  assert_string_equal(words_for(set, "t/1234", buf, sizeof(buf)), "w1234");
  assert_string_equal(words_for(set, "t/12345", buf, sizeof(buf)), "");
  for (int i = 0; i < N; i++)
    hd_handler_unref(m[i]);
  free(m);
  hd_handler_unref(set);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_set_empty_completes_with_no_results),
      cmocka_unit_test(test_set_aggregates_results_in_member_order),
      cmocka_unit_test(test_set_duplicate_member_rejected),
      cmocka_unit_test(test_set_remove_unknown_member_fails),
      cmocka_unit_test(test_set_removed_member_is_released_and_not_called),
      cmocka_unit_test(test_set_member_handle_error_becomes_failed_result),
      cmocka_unit_test(test_set_failed_member_is_timed_alone),
      cmocka_unit_test(test_set_completes_when_async_member_completes_later),
      cmocka_unit_test(test_set_concurrent_completions_complete_once),
      cmocka_unit_test(test_set_foreach_in_insertion_order),
      cmocka_unit_test(test_set_selectors_filter_by_topic_path_in_order),
      cmocka_unit_test(test_set_replace_keeps_place_and_swaps_selector),
      cmocka_unit_test(test_set_many_selectors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
