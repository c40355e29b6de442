/*
 * Unit tests: a call's place under --max-calls (grpc/call.c). The slot is
 * given back when the final status is counted, just before its batch
 * starts, so a caller that has its answer never finds its own call still
 * holding the slot; gRPC may complete that batch, and the call be freed,
 * after the caller has called again. Freeing a call that never answered
 * gives the slot back too, and no path gives it back twice. The
 * handlerd_calls_in_flight gauge counts the same calls (and Health/Watch
 * streams), not those gRPC still holds after their answer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "call.h"
#include "rpc.h"
#include "server.h"

static call *admitted(hd_server *srv) {
  call *c = call_new(srv, NULL, 0);
  assert_non_null(c);
  atomic_store(&c->holds_slot, 1);
  atomic_fetch_add(&srv->holding_slots, 1);
  return c;
}

static void test_the_status_gives_the_slot_back(void **state) {
  hd_server srv;
  (void)state;
  memset(&srv, 0, sizeof(srv));
  call *c = admitted(&srv);
  call *other = admitted(&srv);
  assert_int_equal(atomic_load(&srv.holding_slots), 2);

  call_count(c, 0);
  assert_int_equal(atomic_load(&srv.holding_slots), 1);
  /* Counted once more, then freed: still only its own slot went. */
  call_count(c, 0);
  call_free(c);
  assert_int_equal(atomic_load(&srv.holding_slots), 1);

  call_free(other);
  assert_int_equal(atomic_load(&srv.holding_slots), 0);
}

static void test_a_call_without_a_slot_gives_nothing_back(void **state) {
  hd_server srv;
  (void)state;
  memset(&srv, 0, sizeof(srv));
  call *watch = call_new(&srv, NULL, 0); /* Health/Watch: no slot */
  call *c = admitted(&srv);

  call_count(watch, 0);
  call_free(watch);
  assert_int_equal(atomic_load(&srv.holding_slots), 1);
  call_release_slot(c);
  call_release_slot(c);
  assert_int_equal(atomic_load(&srv.holding_slots), 0);
  call_free(c);
  assert_int_equal(atomic_load(&srv.holding_slots), 0);
}

static void test_the_gauge_counts_calls_not_yet_answered(void **state) {
  hd_server srv;
  (void)state;
  memset(&srv, 0, sizeof(srv));
  call *c = admitted(&srv);
  atomic_store(&srv.in_flight, 3); /* c, an answered call, a watch */
  atomic_store(&srv.watches, 1);
  assert_int_equal(hd_server_calls_in_flight(&srv), 2);
  call_count(c, 0);
  assert_int_equal(hd_server_calls_in_flight(&srv), 1);
  call_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_the_status_gives_the_slot_back),
      cmocka_unit_test(test_a_call_without_a_slot_gives_nothing_back),
      cmocka_unit_test(test_the_gauge_counts_calls_not_yet_answered),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
