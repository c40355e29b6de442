/*
 * Integration tests: the real handlerd on a loopback port, called through
 * the handlerctl C client (gRPC C core). The group setup starts one handlerd
 * shared by the tests; each test uses its own keys so the order does not
 * matter. Tests that need their own process (plugin, shutdown) start one.
 *
 * The shared handlerd's exit status after SIGTERM (a ThreadSanitizer report
 * is 66, a valgrind error 99, a crash 128 + signal) is checked by the last
 * test, test_shared_handlerd_exits_zero, not only by the group teardown:
 * cmocka 1.1.5 reports a failed group teardown and still exits 0. Should the
 * teardown have to stop it all the same, a failure there counts in main's
 * exit status. scripts/check-suite-fails proves the status reaches ctest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "handlerctl/client.h"
#include "harness.h"

#define DEADLINE_MS 10000
#define STREAM_EVENTS 10000
#define STREAM_DEADLINE_MS 120000

enum {
  CODE_OK = 0,
  CODE_INVALID_ARGUMENT = 3,
  CODE_NOT_FOUND = 5,
  CODE_UNIMPLEMENTED = 12
};

typedef struct fixture {
  it_handlerd *srv;
  hc_conn *conn;
} fixture;

/* ---- helpers ------------------------------------------------------------- */

static hc_conn *conn_of(void **state) {
  fixture *f = *state;
  assert_non_null(f);
  return f->conn;
}

/* Connects to `h` or fails the test. */
static hc_conn *connect_to(const it_handlerd *h) {
  hc_options opts = {.default_deadline_ms = DEADLINE_MS};
  hc_conn *c = NULL;
  hc_err err = hc_connect(it_handlerd_addr(h), &opts, &c);
  if (err != HC_OK)
    print_error("hc_connect(%s): %s\n", it_handlerd_addr(h), hc_strerror(err));
  assert_int_equal(err, HC_OK);
  assert_non_null(c);
  return c;
}

/* Asserts `err` is HC_OK, printing the status otherwise. */
static void assert_ok(hc_err err, const hc_status *st, const char *what) {
  if (err != HC_OK)
    print_error("%s: %s (gRPC %d %s: %s)\n", what, hc_strerror(err),
                st->grpc_code, hc_status_code_name(st->grpc_code), st->message);
  assert_int_equal(err, HC_OK);
}

/* Asserts the call failed with gRPC status `code`. */
static void assert_rpc_code(hc_err err, const hc_status *st, int code,
                            const char *what) {
  if (err != HC_ERPC || st->grpc_code != code)
    print_error("%s: want %s, got %s (gRPC %d %s: %s)\n", what,
                hc_status_code_name(code), hc_strerror(err), st->grpc_code,
                hc_status_code_name(st->grpc_code), st->message);
  assert_int_equal(err, HC_ERPC);
  assert_int_equal(st->grpc_code, code);
}

/* Adds local function `fn` under `key`; returns the new id (hc_free it). */
static char *add_local(hc_conn *c, const char *key, const char *fn) {
  char *id = NULL;
  hc_status st;
  hc_err err = hc_add_local(c, key, fn, 0, &id, &st);
  assert_ok(err, &st, "AddHandler");
  assert_non_null(id);
  assert_true(strncmp(id, "h-", 2) == 0);
  return id;
}

static hc_event update_event(const char *key, const char *path, hc_value v) {
  hc_event ev = {.key = key,
                 .event = "update",
                 .topic_path = path,
                 .value = v,
                 .topic_type = HC_TOPIC_JSON};
  return ev;
}

/* Dispatches `ev` and asserts HC_OK; returns the results. */
static hc_results *dispatch_ok(hc_conn *c, const hc_event *ev) {
  hc_results *r = NULL;
  hc_status st;
  hc_err err = hc_dispatch(c, ev, 0, &r, &st);
  assert_ok(err, &st, "Dispatch");
  assert_non_null(r);
  return r;
}

static void assert_int64_result(const hc_result *r, const char *id,
                                int64_t want) {
  if (!r->ok)
    print_error("handler %s failed: %d %s\n", r->handler_id, r->error_code,
                r->error_message);
  assert_true(r->ok);
  assert_string_equal(r->handler_id, id);
  assert_int_equal(r->value.type, HC_VALUE_INT64);
  assert_int_equal(r->value.i64, want);
}

/* ---- group setup
 * ------------------------------------------------------------- */

static int group_setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL)
    return -1;
  if (it_handlerd_start(NULL, &f->srv) != 0) {
    free(f);
    return -1;
  }
  hc_options opts = {.default_deadline_ms = DEADLINE_MS};
  hc_err err = hc_connect(it_handlerd_addr(f->srv), &opts, &f->conn);
  if (err != HC_OK) {
    fprintf(stderr, "hc_connect(%s): %s\n", it_handlerd_addr(f->srv),
            hc_strerror(err));
    it_handlerd_stop(f->srv);
    free(f);
    return -1;
  }
  *state = f;
  return 0;
}

/* Set when the group teardown fails: cmocka 1.1.5 does not count that in
 * its result, main does. */
static int group_teardown_failed;

/* The last test stops the shared handlerd (f->srv = NULL); the teardown
 * stops it only when that test did not run to the end. */
static int group_teardown(void **state) {
  fixture *f = *state;
  if (f == NULL)
    return 0;
  hc_close(f->conn);
  int rc = f->srv != NULL ? it_handlerd_stop(f->srv) : 0;
  free(f);
  if (rc != 0) {
    fprintf(stderr, "handlerd exited with %d after SIGTERM, want 0\n", rc);
    group_teardown_failed = 1;
    return -1;
  }
  return 0;
}

/* ---- handler administration ------------------------------------------------
 */

static void test_add_two_locals_lists_both_in_add_order(void **state) {
  hc_conn *c = conn_of(state);
  char *echo = add_local(c, "it-list", "echo");
  char *count = add_local(c, "it-list", "count");
  assert_string_not_equal(echo, count);

  hc_handler_list *l = NULL;
  hc_status st;
  assert_ok(hc_list_handlers(c, "it-list", 0, &l, &st), &st, "ListHandlers");
  assert_int_equal(l->count, 2);
  assert_string_equal(l->items[0].key, "it-list");
  assert_string_equal(l->items[0].handler_id, echo);
  assert_int_equal(l->items[0].kind, HC_KIND_SIMPLE);
  assert_string_equal(l->items[0].target, "local:echo");
  assert_int_equal(l->items[0].n_events, 0);
  assert_false(l->items[0].secret_set);
  assert_string_equal(l->items[1].key, "it-list");
  assert_string_equal(l->items[1].handler_id, count);
  assert_int_equal(l->items[1].kind, HC_KIND_SIMPLE);
  assert_string_equal(l->items[1].target, "local:count");
  hc_handler_list_free(l);

  /* The full listing has them too, sorted by key. */
  l = NULL;
  assert_ok(hc_list_handlers(c, NULL, 0, &l, &st), &st, "ListHandlers all");
  int seen = 0;
  for (size_t i = 0; i < l->count; i++) {
    if (i > 0)
      assert_true(strcmp(l->items[i - 1].key, l->items[i].key) <= 0);
    if (strcmp(l->items[i].handler_id, echo) == 0 ||
        strcmp(l->items[i].handler_id, count) == 0)
      seen++;
  }
  assert_int_equal(seen, 2);
  hc_handler_list_free(l);
  hc_free(echo);
  hc_free(count);
}

static void test_list_unknown_key_is_not_found(void **state) {
  hc_handler_list *l = NULL;
  hc_status st;
  hc_err err = hc_list_handlers(conn_of(state), "it-no-such-key", 0, &l, &st);
  assert_rpc_code(err, &st, CODE_NOT_FOUND, "ListHandlers unknown key");
  assert_null(l);
}

static void test_add_unknown_function_is_invalid_argument(void **state) {
  char *id = NULL;
  hc_status st;
  hc_err err =
      hc_add_local(conn_of(state), "it-badfn", "no_such_function", 0, &id, &st);
  assert_rpc_code(err, &st, CODE_INVALID_ARGUMENT, "AddHandler bad function");
  assert_null(id);
}

static void test_remove_unknown_id_is_not_found(void **state) {
  hc_conn *c = conn_of(state);
  char *id = add_local(c, "it-rm-unknown", "count");
  hc_status st;
  hc_err err = hc_remove_handler(c, "it-rm-unknown", "h-no-such-id", 0, &st);
  assert_rpc_code(err, &st, CODE_NOT_FOUND, "RemoveHandler unknown id");
  err = hc_remove_handler(c, "it-no-such-key", id, 0, &st);
  assert_rpc_code(err, &st, CODE_NOT_FOUND, "RemoveHandler unknown key");
  hc_free(id);
}

static void test_remove_existing_handler_hides_it_from_list(void **state) {
  hc_conn *c = conn_of(state);
  char *keep = add_local(c, "it-rm", "echo");
  char *gone = add_local(c, "it-rm", "count");
  hc_status st;
  assert_ok(hc_remove_handler(c, "it-rm", gone, 0, &st), &st, "RemoveHandler");

  hc_handler_list *l = NULL;
  assert_ok(hc_list_handlers(c, "it-rm", 0, &l, &st), &st, "ListHandlers");
  assert_int_equal(l->count, 1);
  assert_string_equal(l->items[0].handler_id, keep);
  hc_handler_list_free(l);

  /* Removing it again: it is gone. */
  hc_err err = hc_remove_handler(c, "it-rm", gone, 0, &st);
  assert_rpc_code(err, &st, CODE_NOT_FOUND, "RemoveHandler twice");

  /* Dispatch now reaches only the remaining handler. */
  hc_event ev = update_event("it-rm", "a/b", hc_value_json("1"));
  hc_results *r = dispatch_ok(c, &ev);
  assert_int_equal(r->count, 1);
  assert_string_equal(r->items[0].handler_id, keep);
  hc_results_free(r);
  hc_free(keep);
  hc_free(gone);
}

/* ---- dispatch
 * ---------------------------------------------------------------- */

static void test_dispatch_update_returns_results_in_add_order(void **state) {
  hc_conn *c = conn_of(state);
  char *echo = add_local(c, "it-dispatch", "echo");
  char *count = add_local(c, "it-dispatch", "count");

  hc_event ev =
      update_event("it-dispatch", "prices/eur", hc_value_json("{\"p\":1.5}"));
  hc_results *r = dispatch_ok(c, &ev);
  assert_int_equal(r->count, 2);
  const hc_result *e = &r->items[0];
  if (!e->ok)
    print_error("echo failed: %d %s\n", e->error_code, e->error_message);
  assert_true(e->ok);
  assert_string_equal(e->handler_id, echo);
  assert_int_equal(e->value.type, HC_VALUE_JSON);
  assert_non_null(strstr(e->value.data, "prices/eur"));
  assert_int_equal(e->value.len, strlen(e->value.data));
  assert_true(e->duration_ns >= 0);
  assert_int_equal(e->error_code, 0);
  assert_string_equal(e->error_message, "");
  assert_int64_result(&r->items[1], count, 1);
  hc_results_free(r);

  r = dispatch_ok(c, &ev);
  assert_int_equal(r->count, 2);
  assert_string_equal(r->items[0].handler_id, echo);
  assert_int64_result(&r->items[1], count, 2);
  hc_results_free(r);
  hc_free(echo);
  hc_free(count);
}

static void test_dispatch_unknown_key_is_not_found(void **state) {
  hc_event ev = update_event("it-unknown-key-42", "a", hc_value_json("1"));
  hc_results *r = NULL;
  hc_status st;
  hc_err err = hc_dispatch(conn_of(state), &ev, 0, &r, &st);
  assert_rpc_code(err, &st, CODE_NOT_FOUND, "Dispatch unknown key");
  assert_null(r);
  assert_non_null(strstr(st.message, "it-unknown-key-42"));
}

static void test_dispatch_garbage_bytes_is_invalid_argument(void **state) {
  /* Field 31 with wire type 7: not a protobuf message. */
  static const unsigned char garbage[] = {0xff, 0xff, 0xff, 0xff, 0x01};
  void *reply = NULL;
  size_t len = 0;
  hc_status st;
  hc_err err = hc_call_raw(conn_of(state), "/handlers.v1.Handlers/Dispatch",
                           garbage, sizeof garbage, &reply, &len, 0, &st);
  assert_rpc_code(err, &st, CODE_INVALID_ARGUMENT, "Dispatch garbage");
  assert_null(reply);
}

static void test_dispatch_empty_topic_path_is_invalid_argument(void **state) {
  hc_conn *c = conn_of(state);
  char *id = add_local(c, "it-badpath", "count");
  hc_event ev = update_event("it-badpath", "", hc_value_json("1"));
  hc_results *r = NULL;
  hc_status st;
  hc_err err = hc_dispatch(c, &ev, 0, &r, &st);
  assert_rpc_code(err, &st, CODE_INVALID_ARGUMENT, "Dispatch empty path");
  hc_free(id);
}

static void test_dispatch_update_with_subscribe_args_is_invalid(void **state) {
  hc_conn *c = conn_of(state);
  char *id = add_local(c, "it-badargs", "count");
  hc_event ev = update_event("it-badargs", "a/b", hc_value_json("1"));
  ev.args = HC_ARGS_SUBSCRIBE;
  hc_results *r = NULL;
  hc_status st;
  hc_err err = hc_dispatch(c, &ev, 0, &r, &st);
  assert_rpc_code(err, &st, CODE_INVALID_ARGUMENT, "update + subscribe args");
  hc_free(id);
}

static void test_dispatch_empty_key_is_invalid_argument(void **state) {
  hc_event ev = update_event("", "a/b", hc_value_json("1"));
  hc_results *r = NULL;
  hc_status st;
  hc_err err = hc_dispatch(conn_of(state), &ev, 0, &r, &st);
  assert_rpc_code(err, &st, CODE_INVALID_ARGUMENT, "Dispatch empty key");
}

static void test_unknown_method_is_unimplemented(void **state) {
  hc_status st;
  hc_err err = hc_call_raw(conn_of(state), "/handlers.v1.Handlers/NoSuchMethod",
                           "", 0, NULL, NULL, 0, &st);
  assert_rpc_code(err, &st, CODE_UNIMPLEMENTED, "NoSuchMethod");
}

static void test_event_stream_routes_skip_unrouted_events(void **state) {
  hc_conn *c = conn_of(state);
  hc_route routes[] = {{"update", {.local = "echo"}},
                       {"error", {.local = "count"}}};
  hc_handler_spec spec = {.key = "it-routes", .routes = routes, .n_routes = 2};
  char *id = NULL;
  hc_status st;
  assert_ok(hc_add_handler(c, &spec, 0, &id, NULL, &st), &st,
            "AddHandler routes");

  hc_handler_list *l = NULL;
  assert_ok(hc_list_handlers(c, "it-routes", 0, &l, &st), &st, "List");
  assert_int_equal(l->count, 1);
  assert_int_equal(l->items[0].kind, HC_KIND_EVENT_STREAM);
  assert_int_equal(l->items[0].n_routes, 2);
  for (size_t i = 0; i < 2; i++) {
    const hc_route_info *ri = &l->items[0].routes[i];
    if (strcmp(ri->event, "update") == 0)
      assert_string_equal(ri->target, "local:echo");
    else
      assert_string_equal(ri->target, "local:count");
  }
  hc_handler_list_free(l);

  /* subscribe has no route: no result at all. */
  hc_event sub = {
      .key = "it-routes", .event = "subscribe", .topic_path = "x/y"};
  hc_results *r = dispatch_ok(c, &sub);
  assert_int_equal(r->count, 0);
  hc_results_free(r);

  hc_event upd = update_event("it-routes", "x/y", hc_value_json("[1]"));
  r = dispatch_ok(c, &upd);
  assert_int_equal(r->count, 1);
  assert_string_equal(r->items[0].handler_id, id);
  assert_int_equal(r->items[0].value.type, HC_VALUE_JSON);
  assert_non_null(strstr(r->items[0].value.data, "x/y"));
  hc_results_free(r);

  hc_event err_ev = {.key = "it-routes",
                     .event = "error",
                     .error_code = 7,
                     .error_description = "boom"};
  r = dispatch_ok(c, &err_ev);
  assert_int_equal(r->count, 1);
  assert_int64_result(&r->items[0], id, 1);
  hc_results_free(r);
  hc_free(id);
}

/* ---- streaming
 * ------------------------------------------------------------------ */

static void test_stream_10000_updates_reply_in_order(void **state) {
  hc_conn *c = conn_of(state);
  char *count = add_local(c, "it-stream", "count");
  hc_stream *s = NULL;
  assert_int_equal(hc_stream_open(c, STREAM_DEADLINE_MS, &s), HC_OK);

  /* All sends before any receive: must not deadlock on flow control. */
  for (int i = 0; i < STREAM_EVENTS; i++) {
    hc_event ev = update_event("it-stream", "s/1", hc_value_int64(i));
    ev.topic_type = HC_TOPIC_INT64;
    hc_err err = hc_stream_send(s, &ev);
    if (err != HC_OK)
      print_error("send %d: %s\n", i, hc_strerror(err));
    assert_int_equal(err, HC_OK);
  }
  assert_int_equal(hc_stream_close_send(s), HC_OK);

  for (int i = 0; i < STREAM_EVENTS; i++) {
    hc_stream_reply *rep = NULL;
    hc_err err = hc_stream_recv(s, &rep);
    if (err != HC_OK)
      print_error("recv %d: %s\n", i, hc_strerror(err));
    assert_int_equal(err, HC_OK);
    assert_int_equal(rep->sequence, (uint64_t)i);
    if (rep->code != 0)
      print_error("reply %d: %d %s\n", i, rep->code, rep->message);
    assert_int_equal(rep->code, 0);
    assert_int_equal(rep->results.count, 1);
    assert_int64_result(&rep->results.items[0], count, i + 1);
    hc_stream_reply_free(rep);
  }
  hc_stream_reply *rep = NULL;
  assert_int_equal(hc_stream_recv(s, &rep), HC_ECLOSED);
  assert_null(rep);
  hc_status st;
  assert_ok(hc_stream_finish(s, &st), &st, "stream finish");
  hc_stream_free(s);
  hc_free(count);
}

static void test_stream_bad_request_gets_error_reply_and_goes_on(void **state) {
  hc_conn *c = conn_of(state);
  char *count = add_local(c, "it-stream-bad", "count");
  hc_stream *s = NULL;
  assert_int_equal(hc_stream_open(c, 0, &s), HC_OK);

  /* 0, 1 fine; 2 empty path; 3 fine; 4 unknown key; 5 fine. */
  const char *paths[] = {"p", "p", "", "p", "p", "p"};
  const char *keys[] = {"it-stream-bad", "it-stream-bad",    "it-stream-bad",
                        "it-stream-bad", "it-stream-no-key", "it-stream-bad"};
  for (int i = 0; i < 6; i++) {
    hc_event ev = update_event(keys[i], paths[i], hc_value_json("1"));
    assert_int_equal(hc_stream_send(s, &ev), HC_OK);
  }
  const int codes[] = {0, 0, CODE_INVALID_ARGUMENT, 0, CODE_NOT_FOUND, 0};
  const int64_t counts[] = {1, 2, 0, 3, 0, 4};
  for (int i = 0; i < 6; i++) {
    hc_stream_reply *rep = NULL;
    assert_int_equal(hc_stream_recv(s, &rep), HC_OK);
    assert_int_equal(rep->sequence, (uint64_t)i);
    if (rep->code != codes[i])
      print_error("reply %d: want %d, got %d %s\n", i, codes[i], rep->code,
                  rep->message);
    assert_int_equal(rep->code, codes[i]);
    if (codes[i] == 0) {
      assert_int_equal(rep->results.count, 1);
      assert_int64_result(&rep->results.items[0], count, counts[i]);
    } else {
      assert_int_equal(rep->results.count, 0);
      assert_true(rep->message[0] != '\0');
    }
    hc_stream_reply_free(rep);
  }
  hc_status st;
  assert_ok(hc_stream_finish(s, &st), &st, "stream finish");
  hc_stream_free(s);
  hc_free(count);
}

static void test_stream_freed_unfinished_is_cancelled(void **state) {
  hc_conn *c = conn_of(state);
  char *count = add_local(c, "it-stream-cancel", "count");
  hc_stream *s = NULL;
  assert_int_equal(hc_stream_open(c, 0, &s), HC_OK);
  for (int i = 0; i < 3; i++) {
    hc_event ev = update_event("it-stream-cancel", "p", hc_value_json("1"));
    assert_int_equal(hc_stream_send(s, &ev), HC_OK);
  }
  hc_stream_reply *rep = NULL;
  assert_int_equal(hc_stream_recv(s, &rep), HC_OK);
  assert_int_equal(rep->sequence, 0);
  hc_stream_reply_free(rep);
  hc_stream_free(s); /* neither half-closed nor finished: cancels */

  /* The server is still fine: the three events were counted or dropped,
   * never more. */
  hc_event ev = update_event("it-stream-cancel", "p", hc_value_json("1"));
  hc_results *r = dispatch_ok(c, &ev);
  assert_int_equal(r->count, 1);
  assert_true(r->items[0].ok);
  assert_int_equal(r->items[0].value.type, HC_VALUE_INT64);
  assert_true(r->items[0].value.i64 >= 2 && r->items[0].value.i64 <= 4);
  hc_results_free(r);
  hc_free(count);
}

/* ---- health and connections
 * --------------------------------------------------------- */

/* grpc.health.v1: SERVING for the server ("") and for the service. */
static void test_health_check_is_serving(void **state) {
  hc_serving_status hs = HC_HEALTH_UNKNOWN;
  hc_status st;
  hc_conn *c = conn_of(state);
  hc_err err = hc_health_check(c, NULL, 0, &hs, &st);
  assert_ok(err, &st, "health");
  assert_int_equal(hs, HC_HEALTH_SERVING);
  hs = HC_HEALTH_UNKNOWN;
  err = hc_health_check(c, "handlers.v1.Handlers", 0, &hs, &st);
  assert_ok(err, &st, "health handlers.v1.Handlers");
  assert_int_equal(hs, HC_HEALTH_SERVING);
  err = hc_health_check(c, "no.such.Service", 0, &hs, &st);
  assert_rpc_code(err, &st, CODE_NOT_FOUND, "health unknown service");
}

static void test_connect_to_closed_port_fails(void **state) {
  (void)state;
  /* A port that was just free: bind, read it back, close. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
  close(fd);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
  hc_options opts = {.default_deadline_ms = 3000};
  hc_conn *c = NULL;
  assert_int_equal(hc_connect(addr, &opts, &c), HC_ECONNECT);
  assert_null(c);
}

/* ---- processes of their own --------------------------------------------- */

/* Per-test fixture: a handlerd of the test's own, stopped by the teardown
 * even when the test fails (a test that stops it itself sets srv = NULL). */
static int start_own(void **state, const char *const *args) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL)
    return -1;
  if (it_handlerd_start(args, &f->srv) != 0) {
    free(f);
    return -1;
  }
  *state = f;
  return 0;
}

static int setup_plugin_handlerd(void **state) {
  const char *plugin = getenv("HD_EXAMPLE_PLUGIN");
  if (plugin == NULL) {
    fprintf(stderr, "HD_EXAMPLE_PLUGIN is not set; run through ctest\n");
    return -1;
  }
  const char *args[] = {"--plugin", plugin, NULL};
  return start_own(state, args);
}

static int setup_plain_handlerd(void **state) {
  return start_own(state, NULL);
}

static int teardown_own_handlerd(void **state) {
  fixture *f = *state;
  if (f == NULL)
    return 0;
  hc_close(f->conn);
  int rc = f->srv != NULL ? it_handlerd_stop(f->srv) : 0;
  free(f);
  return rc == 0 ? 0 : -1;
}

static void test_plugin_function_doubles_int64(void **state) {
  fixture *f = *state;
  f->conn = connect_to(f->srv);
  hc_conn *c = f->conn;

  char *id = add_local(c, "it-plugin", "double_it");
  hc_event ev = update_event("it-plugin", "n", hc_value_int64(21));
  ev.topic_type = HC_TOPIC_INT64;
  hc_results *r = dispatch_ok(c, &ev);
  assert_int_equal(r->count, 1);
  assert_int64_result(&r->items[0], id, 42);
  hc_results_free(r);

  ev.value = hc_value_double(1.25);
  ev.topic_type = HC_TOPIC_DOUBLE;
  r = dispatch_ok(c, &ev);
  assert_int_equal(r->count, 1);
  assert_true(r->items[0].ok);
  assert_int_equal(r->items[0].value.type, HC_VALUE_DOUBLE);
  assert_true(r->items[0].value.f64 == 2.5);
  hc_results_free(r);
  hc_free(id);

  hc_close(f->conn);
  f->conn = NULL;
  int rc = it_handlerd_stop(f->srv);
  f->srv = NULL;
  assert_int_equal(rc, 0);
}

static void test_sigterm_shutdown_exits_zero(void **state) {
  fixture *f = *state;
  f->conn = connect_to(f->srv);
  char *id = add_local(f->conn, "it-shutdown", "count");
  hc_event ev = update_event("it-shutdown", "a", hc_value_json("1"));
  hc_results *r = dispatch_ok(f->conn, &ev);
  assert_int_equal(r->count, 1);
  assert_int64_result(&r->items[0], id, 1);
  hc_results_free(r);
  hc_free(id);

  /* SIGTERM with the client's channel still open: a clean exit 0. */
  int rc = it_handlerd_stop(f->srv);
  f->srv = NULL;
  assert_int_equal(rc, 0);

  /* The server is gone: calls now fail with UNAVAILABLE. */
  hc_status st;
  hc_handler_list *l = NULL;
  hc_err err = hc_list_handlers(f->conn, NULL, 2000, &l, &st);
  assert_rpc_code(err, &st, 14, "ListHandlers after shutdown");
}

/* ---- the shared handlerd's exit ------------------------------------------ */

/* Stops the shared handlerd: SIGTERM must give a clean exit 0 after all the
 * tests above. A sanitizer or valgrind report, a leak or a crash in it is a
 * non-zero status and fails this test, hence the binary and ctest. */
static void test_shared_handlerd_exits_zero(void **state) {
  fixture *f = *state;
  assert_non_null(f);
  assert_non_null(f->srv);
  hc_close(f->conn);
  f->conn = NULL;
  int rc = it_handlerd_stop(f->srv);
  f->srv = NULL;
  if (rc != 0)
    print_error("shared handlerd exited with %d after SIGTERM, want 0\n", rc);
  assert_int_equal(rc, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_add_two_locals_lists_both_in_add_order),
      cmocka_unit_test(test_list_unknown_key_is_not_found),
      cmocka_unit_test(test_add_unknown_function_is_invalid_argument),
      cmocka_unit_test(test_remove_unknown_id_is_not_found),
      cmocka_unit_test(test_remove_existing_handler_hides_it_from_list),
      cmocka_unit_test(test_dispatch_update_returns_results_in_add_order),
      cmocka_unit_test(test_dispatch_unknown_key_is_not_found),
      cmocka_unit_test(test_dispatch_garbage_bytes_is_invalid_argument),
      cmocka_unit_test(test_dispatch_empty_topic_path_is_invalid_argument),
      cmocka_unit_test(test_dispatch_update_with_subscribe_args_is_invalid),
      cmocka_unit_test(test_dispatch_empty_key_is_invalid_argument),
      cmocka_unit_test(test_unknown_method_is_unimplemented),
      cmocka_unit_test(test_event_stream_routes_skip_unrouted_events),
      cmocka_unit_test(test_stream_10000_updates_reply_in_order),
      cmocka_unit_test(test_stream_bad_request_gets_error_reply_and_goes_on),
      cmocka_unit_test(test_stream_freed_unfinished_is_cancelled),
      cmocka_unit_test(test_health_check_is_serving),
      cmocka_unit_test(test_connect_to_closed_port_fails),
      cmocka_unit_test_setup_teardown(test_plugin_function_doubles_int64,
                                      setup_plugin_handlerd,
                                      teardown_own_handlerd),
      cmocka_unit_test_setup_teardown(test_sigterm_shutdown_exits_zero,
                                      setup_plain_handlerd,
                                      teardown_own_handlerd),
      /* Last: it stops the daemon the tests above share. */
      cmocka_unit_test(test_shared_handlerd_exits_zero),
  };
  int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
  if (group_teardown_failed)
    failed++;
  return failed == 0 ? 0 : 1;
}
