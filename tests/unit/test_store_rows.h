/*
 * test_store_rows.h - how many registrations a store holds, for the unit
 * tests that check what a control plane saved (test_control.c,
 * test_registration_pb.c), and a load that must work (test_store.c,
 * test_store_migration.c). Include after <cmocka.h>.
 */
#ifndef HD_TEST_STORE_ROWS_H
#define HD_TEST_STORE_ROWS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "store.h"

static inline hd_err store_rows_count(const char *id,
                                      const hd_registration *reg, void *ud) {
  (void)id, (void)reg;
  ++*(size_t *)ud;
  return HD_OK;
}

/* The number of registrations `s` loads (asserting that the load works). */
static inline size_t store_rows(hd_store *s) {
  size_t n = 0;
  assert_int_equal(
      hd_store_load_registrations(s, store_rows_count, &n, NULL, 0), HD_OK);
  return n;
}

/* Loads `s`'s registrations through `fn`/`ud`; a load that fails fails the
 * test, naming the error and the store's message. */
static inline void store_load_ok(hd_store *s, hd_store_registration_fn *fn,
                                 void *ud) {
  char msg[512] = "";
  hd_err err = hd_store_load_registrations(s, fn, ud, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("load: %s: %s", hd_strerror(err), msg);
}

#endif
