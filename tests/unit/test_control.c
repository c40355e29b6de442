/*
 * Unit tests: the control plane (control.c) behind AddHandler,
 * RemoveHandler and ListHandlers, over a real registry and function table
 * (the built-ins), with and without a SQLite store, and with a stub webhook
 * factory standing in for the webhook module.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "control.h"

#include "test_store_rows.h"
#include "test_util.h"

/* ---- fixture --------------------------------------------------------------
 */

/* One control plane: its registry, functions and (optionally) store. */
typedef struct plane {
  hd_registry *reg;
  hd_functions *fns;
  hd_control *ctl;
} plane;

typedef struct fixture {
  plane p;
  hd_arena *a; /* replies and lists */
  hd_store *store;
  char base[64]; /* mkdtemp result */
  char dir[96];  /* base/state: the store's directory */
  /* Run first by teardown, when set (a test's own clean-up that must
   * happen even when an assertion ends the test). */
  void (*cleanup)(void *);
  void *cleanup_arg;
} fixture;

static void plane_open(plane *p) {
  assert_int_equal(hd_registry_new(&p->reg), HD_OK);
  assert_int_equal(hd_functions_new(&p->fns), HD_OK);
  assert_int_equal(hd_builtins_register(p->fns, NULL), HD_OK);
  assert_int_equal(hd_control_new(p->reg, p->fns, &p->ctl), HD_OK);
}

static void plane_close(plane *p) {
  hd_control_free(p->ctl);
  hd_registry_free(p->reg); /* handlers go before their functions */
  hd_functions_free(p->fns);
  memset(p, 0, sizeof(*p));
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));

  if (!f)
    return -1;
  plane_open(&f->p);
  f->a = hd_arena_new(4096);
  *state = f;
  return f->a ? 0 : -1;
}

static int teardown(void **state) {
  fixture *f = *state;

  if (f->cleanup)
    f->cleanup(f->cleanup_arg);
  plane_close(&f->p);
  hd_arena_free(f->a);
  hd_store_close(f->store);
  if (f->base[0]) {
    remove_store_dir(f->dir);
    rmdir(f->base);
  }
  free(f);
  return 0;
}

/* Opens a store in a fresh temporary directory (removed by teardown) and
 * gives it to the fixture's plane. */
static void open_store(fixture *f) {
  char msg[256] = "";

  assert_int_equal(store_tmp_dirs("hd_control_", f->base, sizeof(f->base),
                                  f->dir, sizeof(f->dir), NULL, 0),
                   0);
  if (hd_store_sqlite_open(f->dir, &f->store, msg, sizeof(msg)) != HD_OK)
    fail_msg("cannot open the store: %s", msg);
  hd_control_set_store(f->p.ctl, f->store);
}

/* ---- webhook factory stub --------------------------------------------------
 */

/* One call of the stub factory: what it was asked to build. */
typedef struct factory_call {
  char url[128];
  char secret[128];
  char previous[128]; /* previous_secret */
  int64_t previous_until_ms;
  int new_secret;
} factory_call;

typedef struct factory_log {
  int calls;
  char key[64];
  char url[128];
  char secret[128];
  int new_secret;
  factory_call seen[8]; /* the first 8 calls */
} factory_log;

#define GENERATED_SECRET "whsec_dGVzdC1nZW5lcmF0ZWQtc2VjcmV0"

/* Stands in for the webhook kind's builder: records what it was asked for
 * and answers with a simple handler, generating a secret when asked. */
static hd_err stub_build(void *ud, const hd_kind_site *site,
                         const hd_target_spec *t, hd_handler **out,
                         char **secret_out, char *msg, size_t msg_size) {
  factory_log *log = ud;
  const hd_webhook_spec *wh = &t->webhook;

  log->calls++;
  snprintf(log->key, sizeof(log->key), "%s", site->key);
  snprintf(log->url, sizeof(log->url), "%s", wh->url ? wh->url : "");
  snprintf(log->secret, sizeof(log->secret), "%s",
           wh->secret ? wh->secret : "");
  log->new_secret = wh->new_secret;
  if (log->calls <= 8) {
    factory_call *fc = &log->seen[log->calls - 1];
    snprintf(fc->url, sizeof(fc->url), "%s", wh->url ? wh->url : "");
    snprintf(fc->secret, sizeof(fc->secret), "%s",
             wh->secret ? wh->secret : "");
    snprintf(fc->previous, sizeof(fc->previous), "%s",
             wh->previous_secret ? wh->previous_secret : "");
    fc->previous_until_ms = wh->previous_until_ms;
    fc->new_secret = wh->new_secret;
  }
  if (!wh->url || strncmp(wh->url, "http://", 7) != 0) {
    snprintf(msg, msg_size, "bad url '%s'", wh->url ? wh->url : "");
    return HD_EINVAL;
  }
  if (wh->new_secret) {
    *secret_out = strdup(GENERATED_SECRET);
    assert_non_null(*secret_out);
  }
  return hd_simple_new(noop, NULL, NULL, out);
}

/* Stands in for the webhook row's is_async: the listing's async must come
 * from the row (the control plane names no kind). */
static int stub_is_async(const hd_target_spec *t) {
  return t->webhook.async != 0;
}

/* The webhook row of the kind table with the stubs as its builder and
 * is_async. */
static hd_kind stub_kind;

/* Puts the stub webhook kind, logging to `log`, on `ctl`. */
static void set_stub(hd_control *ctl, factory_log *log) {
  stub_kind = hd_kind_webhook;
  stub_kind.build = stub_build;
  stub_kind.is_async = stub_is_async;
  assert_int_equal(hd_control_set_kind(ctl, &stub_kind, log), HD_OK);
}

/* Opens `q`, a fresh plane over the fixture's store (with the stub factory
 * logging to `log` when set), replays the store into it and returns how
 * many registrations it loaded. */
static size_t replay(fixture *f, plane *q, factory_log *log) {
  char msg[256] = "";
  size_t loaded = 99;

  plane_open(q);
  hd_control_set_store(q->ctl, f->store);
  if (log)
    set_stub(q->ctl, log);
  if (hd_control_load(q->ctl, &loaded, msg, sizeof(msg)) != HD_OK)
    fail_msg("load failed: %s", msg);
  return loaded;
}

/* Replays the store (one registration, one webhook at `url` whose secret was
 * generated) into `q`: the webhook must be rebuilt with the generated
 * secret, not asked for a new one. Returns what the factory was asked. */
static factory_log replay_generated(fixture *f, plane *q, const char *url) {
  factory_log relog = {0};

  assert_int_equal(replay(f, q, &relog), 1);
  assert_int_equal(relog.calls, 1);
  assert_string_equal(relog.url, url);
  assert_string_equal(relog.secret, GENERATED_SECRET);
  assert_int_equal(relog.new_secret, 0);
  return relog;
}

/* ---- requests -------------------------------------------------------------
 */

/* A registration with its parts, all in one place so tests can fill the
 * fields they need. */
typedef struct request {
  hd_registration req;
  hd_route_spec routes[4];
} request;

static void request_init(request *r, const char *key) {
  memset(r, 0, sizeof(*r));
  r->req.key = key;
}

/* target = local:<fn> */
static void set_local(request *r, const char *fn) {
  memset(&r->req.target, 0, sizeof(r->req.target));
  r->req.target.kind = HD_TARGET_LOCAL;
  r->req.target.local = fn;
}

/* A request for `key` with target local:<fn>. */
static void local_request(request *r, const char *key, const char *fn) {
  request_init(r, key);
  set_local(r, fn);
}

/* target = webhook:<url> */
static void set_webhook(request *r, const char *url, int new_secret) {
  memset(&r->req.target, 0, sizeof(r->req.target));
  r->req.target.kind = HD_TARGET_WEBHOOK;
  r->req.target.webhook.url = url;
  r->req.target.webhook.secret = "";
  r->req.target.webhook.new_secret = new_secret;
}

/* Adds route `event` -> local:<fn>, or webhook:<url> when `url` is set. */
static void add_route(request *r, const char *event, const char *fn,
                      const char *url, int new_secret) {
  size_t i = r->req.n_routes;
  hd_route_spec *rt = &r->routes[i];

  assert_true(i < 4);
  memset(rt, 0, sizeof(*rt));
  if (url) {
    rt->target.kind = HD_TARGET_WEBHOOK;
    rt->target.webhook.url = url;
    rt->target.webhook.secret = "";
    rt->target.webhook.new_secret = new_secret;
  } else {
    rt->target.kind = HD_TARGET_LOCAL;
    rt->target.local = fn;
  }
  rt->event = event;
  r->req.routes = r->routes;
  r->req.n_routes = i + 1;
}

/* Puts the stub factory, logging to `log` (cleared), on the fixture's plane
 * and starts `r` as a request for key "wk". */
static void stub_request(fixture *f, factory_log *log, request *r) {
  memset(log, 0, sizeof(*log));
  set_stub(f->p.ctl, log);
  request_init(r, "wk");
}

/* hd_control_add that must succeed; `reply` gets its reply (in the
 * arena). */
static void add_reply(fixture *f, plane *p, const request *r, const char *id,
                      hd_control_added *reply) {
  char msg[256] = "";

  if (hd_control_add(p->ctl, &r->req, id, f->a, reply, msg, sizeof(msg)) !=
      HD_OK)
    fail_msg("add under '%s' failed: %s", r->req.key, msg);
  assert_true(strlen(reply->handler_id) > 0);
}

/* add_reply of `r`, which asks for a new secret, on the fixture's plane:
 * the reply shows the one generated. */
static void add_generated(fixture *f, const request *r,
                          hd_control_added *reply) {
  add_reply(f, &f->p, r, NULL, reply);
  assert_string_equal(reply->secret, GENERATED_SECRET);
}

/* open_store, then stub_request. */
static void stored_stub_request(fixture *f, factory_log *log, request *r) {
  open_store(f);
  stub_request(f, log, r);
}

/* stored_stub_request of a webhook at `url` that asks for a new secret,
 * added (add_generated). */
static void add_generated_webhook(fixture *f, factory_log *log, request *r,
                                  const char *url, hd_control_added *reply) {
  stored_stub_request(f, log, r);
  set_webhook(r, url, 1);
  add_generated(f, r, reply);
}

/* hd_control_add that must succeed; returns the new id (in the arena). */
static const char *add_ok(fixture *f, plane *p, const request *r,
                          const char *id) {
  hd_control_added reply = {0};

  add_reply(f, p, r, id, &reply);
  return hd_arena_strdup(f->a, reply.handler_id);
}

/* Adds `r` as a webhook at `url` signing with `secret`; its id. */
static const char *add_signed_webhook(fixture *f, request *r, const char *url,
                                      const char *secret) {
  set_webhook(r, url, 0);
  r->req.target.webhook.secret = secret;
  return add_ok(f, &f->p, r, NULL);
}

/* hd_control_add that must fail with `want`; returns the message (static). */
static const char *add_fails(fixture *f, const request *r, hd_err want) {
  static char msg[512];
  hd_control_added reply = {0};

  msg[0] = '\0';
  assert_int_equal(
      hd_control_add(f->p.ctl, &r->req, NULL, f->a, &reply, msg, sizeof(msg)),
      want);
  assert_true(msg[0] != '\0');
  return msg;
}

/* ListHandlers for `key` ("" for all) that must succeed. */
static hd_handler_list list_ok(fixture *f, plane *p, const char *key) {
  hd_handler_list reply = {0};
  char msg[256] = "";

  if (hd_control_list(p->ctl, f->a, key, &reply, msg, sizeof(msg)) != HD_OK)
    fail_msg("list '%s' failed: %s", key, msg);
  return reply;
}

/* ListHandlers for `key`, which must show the `n` handlers `ids` in that
 * order. */
static hd_handler_list list_in_order(fixture *f, plane *p, const char *key,
                                     const char *const *ids, size_t n) {
  hd_handler_list l = list_ok(f, p, key);

  assert_int_equal(l.n_handlers, n);
  for (size_t i = 0; i < n; i++)
    assert_string_equal(l.handlers[i].handler_id, ids[i]);
  return l;
}

/* The one handler ListHandlers shows for `key`, which must have id `id`. */
static const hd_handler_info *only_handler(fixture *f, plane *p,
                                           const char *key, const char *id) {
  hd_handler_list l = list_ok(f, p, key);

  assert_int_equal(l.n_handlers, 1);
  assert_string_equal(l.handlers[0].handler_id, id);
  return &l.handlers[0];
}

/* The route target ListHandlers shows for `event`, or NULL. */
static const char *route_of(const hd_handler_info *hi, const char *event) {
  for (size_t i = 0; i < hi->n_routes; i++)
    if (strcmp(hi->routes[i].event, event) == 0)
      return hi->routes[i].target;
  return NULL;
}

/* Dispatches event `name` (update args on path "p") to `key` and returns
 * the results (caller frees). */
static hd_results *dispatch(plane *p, const char *key, const char *name) {
  hd_event ev = {.key = key, .name = name};
  hd_handler *set = NULL;
  hd_results *rs = NULL;

  if (strcmp(name, "update") == 0 || strcmp(name, "subscribe") == 0) {
    ev.args_kind = name[0] == 'u' ? HD_ARGS_UPDATE : HD_ARGS_SUBSCRIBE;
    ev.topic.path = "p";
  }
  assert_int_equal(hd_registry_get(p->reg, key, &set), HD_OK);
  assert_int_equal(hd_handler_run_sync(set, &ev, &rs), HD_OK);
  hd_handler_unref(set);
  assert_non_null(rs);
  return rs;
}

/* ---- AddHandler / ListHandlers --------------------------------------------
 */

static void test_add_local_handler_lists_as_simple(void **state) {
  fixture *f = *state;
  request r;
  hd_control_added reply = {0};
  char msg[256] = "";

  local_request(&r, "k", "echo");
  assert_int_equal(
      hd_control_add(f->p.ctl, &r.req, NULL, f->a, &reply, msg, sizeof(msg)),
      HD_OK);
  assert_non_null(reply.handler_id);
  assert_true(strncmp(reply.handler_id, "h-", 2) == 0);
  assert_string_equal(reply.secret, "");
  assert_int_equal(hd_control_count(f->p.ctl), 1);

  hd_handler_list l = list_ok(f, &f->p, "");
  assert_int_equal(l.n_handlers, 1);
  assert_string_equal(l.handlers[0].key, "k");
  assert_string_equal(l.handlers[0].handler_id, reply.handler_id);
  assert_int_equal(l.handlers[0].kind, HD_SHAPE_SIMPLE);
  assert_string_equal(l.handlers[0].target, "local:echo");
  assert_int_equal(l.handlers[0].n_events, 0);
  assert_int_equal(l.handlers[0].n_routes, 0);
  assert_false(l.handlers[0].secret_set);

  /* The handler is live in the registry under the key. */
  hd_results *rs = dispatch(&f->p, "k", "update");
  assert_int_equal(hd_results_count(rs), 1);
  assert_string_equal(hd_results_at(rs, 0)->handler_id, reply.handler_id);
  assert_int_equal(hd_results_at(rs, 0)->err, HD_OK);
  assert_int_equal(hd_results_at(rs, 0)->value.type, HD_VALUE_JSON);
  hd_results_free(rs);
}

static void test_add_with_events_filter_lists_and_applies_it(void **state) {
  fixture *f = *state;
  request r;
  const char *events[] = {"update", "close"};

  local_request(&r, "k", "echo");
  r.req.events = events;
  r.req.n_events = 2;
  const char *id = add_ok(f, &f->p, &r, NULL);

  const hd_handler_info *hi = only_handler(f, &f->p, "k", id);
  assert_int_equal(hi->kind, HD_SHAPE_SIMPLE);
  assert_string_equal(hi->target, "local:echo");
  assert_int_equal(hi->n_events, 2);
  assert_string_equal(hi->events[0], "update");
  assert_string_equal(hi->events[1], "close");

  hd_results *rs = dispatch(&f->p, "k", "update");
  assert_int_equal(hd_results_count(rs), 1);
  assert_string_equal(hd_results_at(rs, 0)->handler_id, id);
  hd_results_free(rs);
  rs = dispatch(&f->p, "k", "subscribe"); /* filtered out: no result */
  assert_int_equal(hd_results_count(rs), 0);
  hd_results_free(rs);
}

static void test_add_routes_lists_as_event_stream(void **state) {
  fixture *f = *state;
  request r;

  request_init(&r, "k");
  add_route(&r, "update", "echo", NULL, 0);
  add_route(&r, "subscribe", "count", NULL, 0);
  const char *id = add_ok(f, &f->p, &r, NULL);

  hd_handler_list l = list_ok(f, &f->p, "");
  assert_int_equal(l.n_handlers, 1);
  const hd_handler_info *hi = &l.handlers[0];
  assert_string_equal(hi->handler_id, id);
  assert_int_equal(hi->kind, HD_SHAPE_EVENT_STREAM);
  assert_string_equal(hi->target, "");
  assert_int_equal(hi->n_events, 0);
  assert_int_equal(hi->n_routes, 2);
  assert_non_null(route_of(hi, "update"));
  assert_string_equal(route_of(hi, "update"), "local:echo");
  assert_non_null(route_of(hi, "subscribe"));
  assert_string_equal(route_of(hi, "subscribe"), "local:count");

  /* Each route runs its own function, under the registered id. */
  hd_results *rs = dispatch(&f->p, "k", "subscribe");
  assert_int_equal(hd_results_count(rs), 1);
  assert_string_equal(hd_results_at(rs, 0)->handler_id, id);
  assert_int_equal(hd_results_at(rs, 0)->value.type, HD_VALUE_INT64);
  hd_results_free(rs);
  rs = dispatch(&f->p, "k", "close"); /* no route */
  assert_int_equal(hd_results_count(rs), 0);
  hd_results_free(rs);
}

static void test_list_sorts_by_key_then_insertion(void **state) {
  fixture *f = *state;
  request rb, ra;

  local_request(&rb, "b", "echo");
  local_request(&ra, "a", "count");
  const char *b1 = add_ok(f, &f->p, &rb, NULL);
  const char *a1 = add_ok(f, &f->p, &ra, NULL);
  const char *b2 = add_ok(f, &f->p, &rb, NULL);

  hd_handler_list l = list_ok(f, &f->p, "");
  assert_int_equal(l.n_handlers, 3);
  assert_string_equal(l.handlers[0].handler_id, a1);
  assert_string_equal(l.handlers[0].target, "local:count");
  assert_string_equal(l.handlers[1].handler_id, b1);
  assert_string_equal(l.handlers[2].handler_id, b2);
  l = list_ok(f, &f->p, "b");
  assert_int_equal(l.n_handlers, 2);
}

static void test_add_rejects_bad_requests(void **state) {
  fixture *f = *state;
  request r;
  char long_key[HD_KEY_MAX + 2];
  const char *events[] = {"update"};

  local_request(&r, "", "echo");
  assert_string_equal(add_fails(f, &r, HD_EINVAL), "key is empty");

  memset(long_key, 'k', HD_KEY_MAX + 1);
  long_key[HD_KEY_MAX + 1] = '\0';
  local_request(&r, long_key, "echo");
  assert_non_null(strstr(add_fails(f, &r, HD_EINVAL), "257 bytes"));

  request_init(&r, "k");
  assert_string_equal(add_fails(f, &r, HD_EINVAL), "give a target or routes");

  local_request(&r, "k", "echo");
  add_route(&r, "update", "echo", NULL, 0);
  assert_non_null(strstr(add_fails(f, &r, HD_EINVAL), "not both"));

  request_init(&r, "k");
  add_route(&r, "update", "echo", NULL, 0);
  r.req.events = events;
  r.req.n_events = 1;
  assert_non_null(strstr(add_fails(f, &r, HD_EINVAL), "events"));

  local_request(&r, "k", "no_such_fn");
  assert_non_null(strstr(add_fails(f, &r, HD_EINVAL), "'no_such_fn'"));

  request_init(&r, "k");
  add_route(&r, "update", "echo", NULL, 0);
  add_route(&r, "close", "missing_fn", NULL, 0);
  const char *msg = add_fails(f, &r, HD_EINVAL);
  assert_non_null(strstr(msg, "route 'close'"));
  assert_non_null(strstr(msg, "'missing_fn'"));

  local_request(&r, "k", "echo");
  r.req.target.kind = (hd_target_kind)99; /* no row has it */
  assert_non_null(strstr(add_fails(f, &r, HD_EINVAL), "neither"));

  /* Nothing half-registered. */
  assert_int_equal(hd_control_count(f->p.ctl), 0);
  assert_int_equal(hd_registry_key_count(f->p.reg), 0);
  assert_int_equal(list_ok(f, &f->p, "").n_handlers, 0);
}

static void test_key_at_the_limit_is_accepted(void **state) {
  fixture *f = *state;
  request r;
  char key[HD_KEY_MAX + 1];

  memset(key, 'k', HD_KEY_MAX);
  key[HD_KEY_MAX] = '\0';
  local_request(&r, key, "echo");
  add_ok(f, &f->p, &r, NULL);
  assert_int_equal(hd_control_count(f->p.ctl), 1);
}

static void test_webhook_without_factory_is_unsupported(void **state) {
  fixture *f = *state;
  request r;

  request_init(&r, "k");
  set_webhook(&r, "http://example.test/hook", 0);
  assert_non_null(strstr(add_fails(f, &r, HD_EUNSUPPORTED), "webhook"));

  request_init(&r, "k");
  add_route(&r, "update", NULL, "http://example.test/hook", 0);
  assert_non_null(strstr(add_fails(f, &r, HD_EUNSUPPORTED), "webhook"));
  assert_int_equal(hd_control_count(f->p.ctl), 0);
}

/* ---- RemoveHandler ---------------------------------------------------------
 */

static void test_remove_unknown_key_or_id_fails_with_message(void **state) {
  fixture *f = *state;
  request r;
  char msg[256] = "";

  local_request(&r, "k", "echo");
  const char *id = add_ok(f, &f->p, &r, NULL);

  assert_int_equal(hd_control_remove(f->p.ctl, "nokey", id, msg, sizeof(msg)),
                   HD_ENOKEY);
  assert_string_equal(msg, "no handler registered for key 'nokey'");
  msg[0] = '\0';
  assert_int_equal(
      hd_control_remove(f->p.ctl, "k", "h-ffffffffffff", msg, sizeof(msg)),
      HD_ENOTFOUND);
  assert_string_equal(msg, "no handler 'h-ffffffffffff' under key 'k'");
  assert_int_equal(hd_control_count(f->p.ctl), 1);
  assert_int_equal(list_ok(f, &f->p, "k").n_handlers, 1);
}

static void test_remove_then_list(void **state) {
  fixture *f = *state;
  request r;
  char msg[256] = "";
  hd_handler_list l;

  local_request(&r, "k", "echo");
  const char *a = add_ok(f, &f->p, &r, NULL);
  const char *b = add_ok(f, &f->p, &r, NULL);

  assert_int_equal(hd_control_remove(f->p.ctl, "k", a, msg, sizeof(msg)),
                   HD_OK);
  assert_int_equal(hd_control_count(f->p.ctl), 1);
  l = list_ok(f, &f->p, "k");
  assert_int_equal(l.n_handlers, 1);
  assert_string_equal(l.handlers[0].handler_id, b);
  /* Removing it again: the key is still there, the id is not. */
  assert_int_equal(hd_control_remove(f->p.ctl, "k", a, msg, sizeof(msg)),
                   HD_ENOTFOUND);

  assert_int_equal(hd_control_remove(f->p.ctl, "k", b, msg, sizeof(msg)),
                   HD_OK);
  assert_int_equal(hd_control_count(f->p.ctl), 0);
  hd_handler_list none = {0};
  msg[0] = '\0';
  assert_int_equal(
      hd_control_list(f->p.ctl, f->a, "k", &none, msg, sizeof(msg)), HD_ENOKEY);
  assert_string_equal(msg, "no handler registered for key 'k'");
  assert_int_equal(list_ok(f, &f->p, "").n_handlers, 0);
}

static void test_remove_id_under_other_key_is_enotfound(void **state) {
  fixture *f = *state;
  request ra, rb;
  char msg[256] = "";

  local_request(&ra, "a", "echo");
  local_request(&rb, "b", "echo");
  const char *a = add_ok(f, &f->p, &ra, NULL);
  add_ok(f, &f->p, &rb, NULL);

  assert_int_equal(hd_control_remove(f->p.ctl, "b", a, msg, sizeof(msg)),
                   HD_ENOTFOUND);
  assert_int_equal(hd_control_count(f->p.ctl), 2);
  assert_int_equal(list_ok(f, &f->p, "a").n_handlers, 1);
}

/* Enough handlers that the id index is searched in earnest: every one is
 * listed with its own description and can be removed by its id. */
static void test_many_handlers_list_and_remove_by_id(void **state) {
  fixture *f = *state;
  static const char *const keys[] = {"k0", "k1", "k2", "k3"};
  static const char *const fns[] = {"echo", "count", "last_value"};
  enum { N = 60 };
  const char *ids[N];
  request r;
  char msg[256] = "";

  for (int i = 0; i < N; i++) {
    local_request(&r, keys[i % 4], fns[i % 3]);
    ids[i] = add_ok(f, &f->p, &r, NULL);
  }
  assert_int_equal(hd_control_count(f->p.ctl), N);
  hd_handler_list l = list_ok(f, &f->p, "");
  assert_int_equal(l.n_handlers, N);
  for (int i = 0; i < N; i++) {
    /* Sorted by key, then insertion: i is at (i % 4) * 15 + i / 4. */
    const hd_handler_info *hi = &l.handlers[(i % 4) * 15 + i / 4];
    char want[32];
    snprintf(want, sizeof(want), "local:%s", fns[i % 3]);
    assert_string_equal(hi->handler_id, ids[i]);
    assert_string_equal(hi->key, keys[i % 4]);
    assert_string_equal(hi->target, want);
  }
  /* Remove in an order unrelated to the ids' sort order. */
  for (int i = 0; i < N; i++) {
    int k = (i * 7) % N;
    if (hd_control_remove(f->p.ctl, keys[k % 4], ids[k], msg, sizeof(msg)) !=
        HD_OK)
      fail_msg("remove %s: %s", ids[k], msg);
    assert_int_equal(hd_control_count(f->p.ctl), N - 1 - i);
  }
  assert_int_equal(hd_registry_key_count(f->p.reg), 0);
}

/* ---- forced ids ------------------------------------------------------------
 */

/* Regression: a forced id (replaying a saved registration) must be the id
 * of what is registered and of the results, for filtered and routed
 * handlers too, not only for plain simple ones. */
static void test_forced_id_is_kept_for_every_shape(void **state) {
  fixture *f = *state;
  request plain, filtered, routed;
  const char *events[] = {"update"};
  static const char *const keys[] = {"plain", "filtered", "routed"};
  static const char *const ids[] = {"h-00000000000a", "h-00000000000b",
                                    "h-00000000000c"};

  local_request(&plain, keys[0], "echo");
  local_request(&filtered, keys[1], "echo");
  filtered.req.events = events;
  filtered.req.n_events = 1;
  request_init(&routed, keys[2]);
  add_route(&routed, "update", "echo", NULL, 0);

  assert_string_equal(add_ok(f, &f->p, &plain, ids[0]), ids[0]);
  assert_string_equal(add_ok(f, &f->p, &filtered, ids[1]), ids[1]);
  assert_string_equal(add_ok(f, &f->p, &routed, ids[2]), ids[2]);

  for (int i = 0; i < 3; i++) {
    only_handler(f, &f->p, keys[i], ids[i]);
    hd_results *rs = dispatch(&f->p, keys[i], "update");
    assert_int_equal(hd_results_count(rs), 1);
    assert_string_equal(hd_results_at(rs, 0)->handler_id, ids[i]);
    hd_results_free(rs);
  }
  /* And it can be removed by that id. */
  char msg[256] = "";
  assert_int_equal(
      hd_control_remove(f->p.ctl, keys[1], ids[1], msg, sizeof(msg)), HD_OK);
  assert_int_equal(hd_control_count(f->p.ctl), 2);
}

static void
test_forced_id_already_registered_is_eexist_and_harmless(void **state) {
  fixture *f = *state;
  request first, again;
  hd_control_added reply = {0};
  char msg[256] = "";
  const char *id = "h-0000000000aa";

  open_store(f);
  local_request(&first, "k", "echo");
  local_request(&again, "k", "count");
  assert_string_equal(add_ok(f, &f->p, &first, id), id);
  assert_int_equal(
      hd_control_add(f->p.ctl, &again.req, id, f->a, &reply, msg, sizeof(msg)),
      HD_EEXIST);
  assert_non_null(strstr(msg, id));
  /* The live registration is untouched: listed as before... */
  hd_handler_list l = list_ok(f, &f->p, "k");
  assert_int_equal(l.n_handlers, 1);
  assert_string_equal(l.handlers[0].target, "local:echo");
  /* ...and still in the store. */
  plane fresh;
  assert_int_equal(replay(f, &fresh, NULL), 1);
  hd_handler_list fl = list_ok(f, &fresh, "k");
  assert_string_equal(fl.handlers[0].target, "local:echo");
  plane_close(&fresh);
}

static void test_forced_id_that_is_not_an_id_is_einval(void **state) {
  fixture *f = *state;
  request r;
  hd_control_added reply = {0};
  char msg[256] = "";
  char too_long[HD_HANDLER_ID_MAX + 2];

  memset(too_long, 'x', sizeof(too_long) - 1);
  too_long[sizeof(too_long) - 1] = '\0';
  local_request(&r, "k", "echo");
  assert_int_equal(hd_control_add(f->p.ctl, &r.req, too_long, f->a, &reply, msg,
                                  sizeof(msg)),
                   HD_EINVAL);
  assert_int_equal(hd_control_count(f->p.ctl), 0);
  assert_int_equal(hd_registry_key_count(f->p.reg), 0);
}

/* ---- with a store ----------------------------------------------------------
 */

static void
test_load_replays_registrations_with_their_ids_in_order(void **state) {
  fixture *f = *state;
  request simple, filtered, routed;
  const char *events[] = {"update", "close"};
  const char *ids[3];
  char msg[256] = "";

  open_store(f);
  local_request(&simple, "k", "echo");
  local_request(&filtered, "k", "count");
  filtered.req.events = events;
  filtered.req.n_events = 2;
  request_init(&routed, "k");
  add_route(&routed, "update", "echo", NULL, 0);
  add_route(&routed, "subscribe", "last_value", NULL, 0);
  ids[0] = add_ok(f, &f->p, &simple, NULL);
  ids[1] = add_ok(f, &f->p, &filtered, NULL);
  ids[2] = add_ok(f, &f->p, &routed, NULL);

  /* A restart: a fresh plane over a reopened store. */
  hd_store_close(f->store);
  f->store = NULL;
  assert_int_equal(hd_store_sqlite_open(f->dir, &f->store, msg, sizeof(msg)),
                   HD_OK);
  plane q;
  assert_int_equal(replay(f, &q, NULL), 3);
  assert_int_equal(hd_control_count(q.ctl), 3);

  hd_handler_list l = list_in_order(f, &q, "k", ids, 3);
  assert_string_equal(l.handlers[0].target, "local:echo");
  assert_int_equal(l.handlers[1].n_events, 2);
  assert_string_equal(l.handlers[1].events[1], "close");
  assert_int_equal(l.handlers[2].kind, HD_SHAPE_EVENT_STREAM);
  assert_string_equal(route_of(&l.handlers[2], "subscribe"),
                      "local:last_value");

  /* The replayed handlers answer with the same ids. */
  hd_results *rs = dispatch(&q, "k", "update");
  assert_int_equal(hd_results_count(rs), 3);
  for (size_t i = 0; i < 3; i++)
    assert_string_equal(hd_results_at(rs, i)->handler_id, ids[i]);
  hd_results_free(rs);

  /* A removal is durable too. */
  assert_int_equal(hd_control_remove(q.ctl, "k", ids[1], msg, sizeof(msg)),
                   HD_OK);
  plane_close(&q);
  assert_int_equal(replay(f, &q, NULL), 2);
  l = list_ok(f, &q, "");
  assert_int_equal(l.n_handlers, 2);
  assert_string_equal(l.handlers[0].handler_id, ids[0]);
  assert_string_equal(l.handlers[1].handler_id, ids[2]);
  plane_close(&q);
}

static void test_load_without_store_loads_nothing(void **state) {
  fixture *f = *state;
  size_t loaded = 99;
  char msg[64] = "";

  assert_int_equal(hd_control_load(f->p.ctl, &loaded, msg, sizeof(msg)), HD_OK);
  assert_int_equal(loaded, 0);
}

/* Saves `r` under `id` straight into the fixture's store, as if an earlier
 * run (or another build) had registered it. */
static void save_raw(fixture *f, const char *id, const request *r) {
  char msg[256] = "";

  if (hd_store_put_registration(f->store, id, &r->req, msg, sizeof(msg)) !=
      HD_OK)
    fail_msg("put %s: %s", id, msg);
}

/* Opens `q` over the fixture's store and loads it, which must fail with
 * `want`; returns the message (static). */
static const char *replay_fails(fixture *f, plane *q, hd_err want) {
  static char msg[512];
  size_t loaded = 99;

  msg[0] = '\0';
  plane_open(q);
  hd_control_set_store(q->ctl, f->store);
  assert_int_equal(hd_control_load(q->ctl, &loaded, msg, sizeof(msg)), want);
  assert_true(msg[0] != '\0');
  return msg;
}

static void
test_load_stops_at_a_registration_that_no_longer_builds(void **state) {
  fixture *f = *state;
  request r;

  open_store(f);
  local_request(&r, "k", "echo");
  add_ok(f, &f->p, &r, NULL);
  /* As if saved by a build that had a plugin function "gone". */
  request gone;
  local_request(&gone, "k", "gone");
  save_raw(f, "h-0000000000ff", &gone);

  /* Serving without it would drop an acknowledged registration: the load
   * stops, naming it and why. */
  plane q;
  const char *msg = replay_fails(f, &q, HD_EINVAL);
  assert_non_null(strstr(msg, "cannot restore handler h-0000000000ff under "
                              "key 'k': target: no local function named "
                              "'gone'"));
  plane_close(&q);
  /* It stays saved, for a start with the plugin back. */
  assert_int_equal(store_rows(f->store), 2);
}

/* A store that loads one registration, then fails on a record it cannot
 * read (its format is the store's: test_store checks that it says so). */
static hd_err half_load(hd_store *s, hd_store_registration_fn *fn, void *ud,
                        char *msg, size_t msg_size) {
  request r;
  (void)s;
  local_request(&r, "k", "echo");
  hd_err err = fn("h-00000000000b", &r.req, ud);
  if (err != HD_OK)
    return err;
  snprintf(msg, msg_size,
           "/state/handlerd.db: record h-00000000000a cannot "
           "be decoded");
  return HD_EIO;
}

static void test_load_stops_at_a_saved_record_that_does_not_read(void **state) {
  fixture *f = *state;
  static const hd_store_vtable vt = {.name = "half", .load = half_load};
  hd_store half = {.vt = &vt};
  char msg[256] = "";
  size_t loaded = 99;

  hd_control_set_store(f->p.ctl, &half);
  assert_int_equal(hd_control_load(f->p.ctl, &loaded, msg, sizeof(msg)),
                   HD_EIO);
  assert_string_equal(msg, "cannot load registrations: /state/handlerd.db: "
                           "record h-00000000000a cannot be decoded");
  assert_int_equal(loaded, 1);
  hd_control_set_store(f->p.ctl, NULL);
}

static void test_load_skips_a_registration_over_a_limit(void **state) {
  fixture *f = *state;
  request r;

  open_store(f);
  local_request(&r, "k", "echo");
  const char *first = add_ok(f, &f->p, &r, NULL);
  add_ok(f, &f->p, &r, NULL);

  /* A limit set before loading (handlerd sets them after) refuses the
   * second: logged and skipped, not a reason to stop; it stays saved. */
  plane q;
  char msg[256] = "";
  size_t loaded = 99;
  plane_open(&q);
  hd_registry_set_limits(q.reg, 0, 1);
  hd_control_set_store(q.ctl, f->store);
  assert_int_equal(hd_control_load(q.ctl, &loaded, msg, sizeof(msg)), HD_OK);
  assert_int_equal(loaded, 1);
  only_handler(f, &q, "", first);
  plane_close(&q);
  assert_int_equal(store_rows(f->store), 2);
}

/* ---- a store that fails on demand ----------------------------------------
 */

typedef struct failing_store {
  hd_store base;
  hd_err err;      /* what put and del answer; HD_OK: they work */
  const char *why; /* and the message they give */
  int puts, dels;
} failing_store;

static hd_err fs_put(hd_store *s, const char *id, const hd_registration *reg,
                     char *msg, size_t msg_size) {
  failing_store *fs = s->impl;
  (void)id, (void)reg;
  fs->puts++;
  if (fs->err != HD_OK)
    snprintf(msg, msg_size, "%s", fs->why);
  return fs->err;
}

static hd_err fs_del(hd_store *s, const char *id, char *msg, size_t msg_size) {
  failing_store *fs = s->impl;
  (void)id;
  fs->dels++;
  if (fs->err != HD_OK)
    snprintf(msg, msg_size, "%s", fs->why);
  return fs->err;
}

static hd_err fs_load(hd_store *s, hd_store_registration_fn *fn, void *ud,
                      char *msg, size_t msg_size) {
  failing_store *fs = s->impl;
  (void)fn, (void)ud;
  if (fs->err != HD_OK)
    snprintf(msg, msg_size, "%s", fs->why);
  return fs->err;
}

static void fs_close(hd_store *s) {
  (void)s;
}

static const hd_store_vtable failing_ops = {.name = "failing",
                                            .put = fs_put,
                                            .del = fs_del,
                                            .load = fs_load,
                                            .close = fs_close};

static void failing_store_init(failing_store *fs) {
  memset(fs, 0, sizeof(*fs));
  fs->base.vt = &failing_ops;
  fs->base.impl = fs;
}

static void
test_store_failures_name_the_cause_and_change_nothing(void **state) {
  fixture *f = *state;
  failing_store fs;
  request r;
  char msg[512] = "";

  failing_store_init(&fs);
  hd_control_set_store(f->p.ctl, &fs.base);
  local_request(&r, "k", "echo");
  const char *kept = add_ok(f, &f->p, &r, NULL);

  /* Disk full: RESOURCE_EXHAUSTED's code, the store's message. */
  fs.err = HD_EBUSY;
  fs.why = "/state/handlerd.db: database or disk is full";
  assert_string_equal(add_fails(f, &r, HD_EBUSY),
                      "cannot save the registration: /state/handlerd.db: "
                      "database or disk is full");
  assert_int_equal(fs.dels, 0); /* nothing was saved, nothing to undo */
  assert_int_equal(hd_control_remove(f->p.ctl, "k", kept, msg, sizeof(msg)),
                   HD_EBUSY);
  assert_string_equal(msg, "cannot delete the registration: "
                           "/state/handlerd.db: database or disk is full");
  only_handler(f, &f->p, "", kept);

  /* Read-only (or any other store failure): HD_EIO, UNAVAILABLE. */
  fs.err = HD_EIO;
  fs.why = "/state/handlerd.db: the database is read-only";
  assert_string_equal(add_fails(f, &r, HD_EIO),
                      "cannot save the registration: /state/handlerd.db: "
                      "the database is read-only");
  assert_int_equal(hd_control_remove(f->p.ctl, "k", kept, msg, sizeof(msg)),
                   HD_EIO);
  assert_string_equal(msg, "cannot delete the registration: "
                           "/state/handlerd.db: the database is read-only");
  only_handler(f, &f->p, "", kept);
  hd_results *rs = dispatch(&f->p, "k", "update");
  assert_int_equal(hd_results_count(rs), 1);
  hd_results_free(rs);

  /* A load failure says what the store said. */
  plane q;
  size_t loaded = 99;
  plane_open(&q);
  hd_control_set_store(q.ctl, &fs.base);
  assert_int_equal(hd_control_load(q.ctl, &loaded, msg, sizeof(msg)), HD_EIO);
  assert_string_equal(msg, "cannot load registrations: /state/handlerd.db: "
                           "the database is read-only");
  plane_close(&q);

  /* Working again: no restart needed. */
  fs.err = HD_OK;
  add_ok(f, &f->p, &r, NULL);
  assert_int_equal(hd_control_remove(f->p.ctl, "k", kept, msg, sizeof(msg)),
                   HD_OK);
  assert_int_equal(hd_control_count(f->p.ctl), 1);
}

static void test_refused_after_saving_is_deleted_again(void **state) {
  fixture *f = *state;
  failing_store fs;
  request r;

  failing_store_init(&fs);
  hd_control_set_store(f->p.ctl, &fs.base);
  hd_registry_set_limits(f->p.reg, 0, 1);
  local_request(&r, "k", "echo");
  add_ok(f, &f->p, &r, NULL);
  /* Saved, then refused by the registry's limit: the save is undone. */
  assert_non_null(strstr(add_fails(f, &r, HD_EBUSY), "--max-handlers-per-key"));
  assert_int_equal(fs.puts, 2);
  assert_int_equal(fs.dels, 1);
}

/* ---- commit before acknowledgement -----------------------------------------
 */

/* A store in front of the fixture's SQLite store whose put and del stop at
 * a gate until the test opens it (a commit that stalls), then either commit
 * in the real store or fail without touching it (a commit that fails); and
 * one hd_control_add or hd_control_remove run on its own thread, as a gRPC
 * thread would run it, against that store. On the heap, and released by
 * teardown (which opens the gate and joins the thread first), so a failed
 * assertion does not leave the thread waiting on a dead stack frame. */
typedef struct held_call {
  hd_store base;
  hd_store *real;
  hd_err fail;     /* after the gate: HD_OK commits, else this is returned */
  const char *why; /* the failure's message */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int gated;   /* put and del wait at the gate */
  int waiting; /* a put or del is at the gate */
  int open;    /* the gate is open */

  hd_control *ctl;
  int add;     /* add req, or else remove key/id */
  int update;  /* update key/id to req (before `add`) */
  request req; /* here: the thread may outlive the test's frame */
  const char *key, *id;
  hd_arena *a; /* the call's own: the test thread uses the fixture's */
  hd_control_added reply;
  hd_err err;
  char msg[512];
  atomic_int answered;
  int started; /* the thread runs (until joined) */
  pthread_t thread;
} held_call;

static void gate_pass(held_call *hc) {
  pthread_mutex_lock(&hc->lock);
  if (hc->gated) {
    hc->waiting = 1;
    pthread_cond_broadcast(&hc->cond);
    while (!hc->open)
      pthread_cond_wait(&hc->cond, &hc->lock);
  }
  pthread_mutex_unlock(&hc->lock);
}

static void gate_open(held_call *hc) {
  pthread_mutex_lock(&hc->lock);
  hc->open = 1;
  pthread_cond_broadcast(&hc->cond);
  pthread_mutex_unlock(&hc->lock);
}

/* Waits (up to 10 s) until a put or del is held at the gate; whether one
 * is. */
static int gate_wait_held(held_call *hc) {
  struct timespec until;
  int rc = 0;

  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 10;
  pthread_mutex_lock(&hc->lock);
  while (!hc->waiting && rc != ETIMEDOUT)
    rc = pthread_cond_timedwait(&hc->cond, &hc->lock, &until);
  int held = hc->waiting;
  pthread_mutex_unlock(&hc->lock);
  return held;
}

static hd_err hc_put(hd_store *s, const char *id, const hd_registration *reg,
                     char *msg, size_t msg_size) {
  held_call *hc = s->impl;
  gate_pass(hc);
  if (hc->fail != HD_OK) {
    snprintf(msg, msg_size, "%s", hc->why);
    return hc->fail;
  }
  return hd_store_put_registration(hc->real, id, reg, msg, msg_size);
}

static hd_err hc_del(hd_store *s, const char *id, char *msg, size_t msg_size) {
  held_call *hc = s->impl;
  gate_pass(hc);
  if (hc->fail != HD_OK) {
    snprintf(msg, msg_size, "%s", hc->why);
    return hc->fail;
  }
  return hd_store_del(hc->real, id, msg, msg_size);
}

static hd_err hc_load(hd_store *s, hd_store_registration_fn *fn, void *ud,
                      char *msg, size_t msg_size) {
  held_call *hc = s->impl;
  return hd_store_load_registrations(hc->real, fn, ud, msg, msg_size);
}

static const hd_store_vtable held_ops = {.name = "held",
                                         .put = hc_put,
                                         .del = hc_del,
                                         .load = hc_load,
                                         .close = fs_close};

static void held_call_free(void *p) {
  held_call *hc = p;

  if (hc->started) {
    gate_open(hc);
    pthread_join(hc->thread, NULL);
  }
  hd_arena_free(hc->a);
  pthread_cond_destroy(&hc->cond);
  pthread_mutex_destroy(&hc->lock);
  free(hc);
}

/* Opens the fixture's SQLite store and puts a new held_call's store, gate
 * open, in front of it on the fixture's plane. */
static held_call *held_call_new(fixture *f) {
  held_call *hc = calloc(1, sizeof(*hc));

  assert_non_null(hc);
  pthread_mutex_init(&hc->lock, NULL);
  pthread_cond_init(&hc->cond, NULL);
  f->cleanup = held_call_free;
  f->cleanup_arg = hc;
  open_store(f);
  hc->base.vt = &held_ops;
  hc->base.impl = hc;
  hc->real = f->store;
  hc->ctl = f->p.ctl;
  hc->reply = (hd_control_added){0};
  hc->a = hd_arena_new(4096);
  assert_non_null(hc->a);
  hd_control_set_store(f->p.ctl, &hc->base);
  return hc;
}

static void *held_call_run(void *arg) {
  held_call *hc = arg;

  if (hc->update)
    hc->err = hd_control_update(hc->ctl, hc->key, hc->id, &hc->req.req, hc->a,
                                NULL, hc->msg, sizeof(hc->msg));
  else if (hc->add)
    hc->err = hd_control_add(hc->ctl, &hc->req.req, NULL, hc->a, &hc->reply,
                             hc->msg, sizeof(hc->msg));
  else
    hc->err =
        hd_control_remove(hc->ctl, hc->key, hc->id, hc->msg, sizeof(hc->msg));
  atomic_store(&hc->answered, 1);
  return NULL;
}

/* A held_call (held_call_new) on a handler local:echo it adds under "k"
 * first; the handler's id in *id and hc->id. Say what the call does, then
 * start_held. */
static held_call *held_call_on_echo(fixture *f, const char **id) {
  held_call *hc = held_call_new(f);
  request r;

  local_request(&r, "k", "echo");
  *id = add_ok(f, &f->p, &r, NULL);
  hc->key = "k";
  hc->id = *id;
  return hc;
}

/* Closes the gate, starts the call on its own thread and returns once its
 * commit is held at the gate, not answered. */
static void start_held(held_call *hc) {
  hc->gated = 1;
  assert_int_equal(pthread_create(&hc->thread, NULL, held_call_run, hc), 0);
  hc->started = 1;
  if (!gate_wait_held(hc))
    fail_msg("the store was never asked to commit");
  /* A call that answered before its commit did would have done so by
   * now. */
  usleep(50 * 1000);
  if (atomic_load(&hc->answered))
    fail_msg("answered (%s: %s) while the store's commit was still held",
             hd_strerror(hc->err), hc->msg);
}

/* Lets the held commit go on; the call's answer. */
static hd_err finish_held(held_call *hc) {
  gate_open(hc);
  assert_int_equal(pthread_join(hc->thread, NULL), 0);
  hc->started = 0;
  assert_true(atomic_load(&hc->answered));
  return hc->err;
}

/* What a restart would load from the fixture's store: a fresh plane over
 * it, which must load `want` registrations (then closed). */
static void restart_loads(fixture *f, size_t want) {
  plane q;
  assert_int_equal(replay(f, &q, NULL), want);
  plane_close(&q);
}

/* Nothing is registered or saved: a restart loads nothing. */
static void nothing_left(fixture *f) {
  assert_int_equal(hd_control_count(f->p.ctl), 0);
  assert_int_equal(hd_registry_key_count(f->p.reg), 0);
  assert_int_equal(store_rows(f->store), 0);
  restart_loads(f, 0);
}

/* The handler registered under "k" is `id`, and it answers. */
static void still_serving(fixture *f, const char *id) {
  only_handler(f, &f->p, "k", id);
  hd_results *rs = dispatch(&f->p, "k", "update");
  assert_int_equal(hd_results_count(rs), 1);
  assert_string_equal(hd_results_at(rs, 0)->handler_id, id);
  hd_results_free(rs);
}

/* AddHandler is answered only after its registration is committed, and
 * nothing of it can be seen (listed, dispatched to) before then: a crash
 * while the commit is held loses nothing anyone was told about. */
static void test_add_answers_only_after_the_commit(void **state) {
  fixture *f = *state;
  held_call *hc = held_call_new(f);

  local_request(&hc->req, "k", "echo");
  hc->add = 1;
  start_held(hc);
  assert_int_equal(hd_control_count(f->p.ctl), 0);
  assert_int_equal(hd_registry_key_count(f->p.reg), 0);
  assert_int_equal(list_ok(f, &f->p, "").n_handlers, 0);
  assert_int_equal(store_rows(f->store), 0);

  assert_int_equal(finish_held(hc), HD_OK);
  assert_non_null(hc->reply.handler_id);
  still_serving(f, hc->reply.handler_id);
  assert_int_equal(store_rows(f->store), 1);
  restart_loads(f, 1);
}

/* A commit that fails (after stalling) fails AddHandler with the store's
 * cause, and leaves nothing registered and nothing saved. */
static void test_add_whose_commit_fails_registers_nothing(void **state) {
  fixture *f = *state;
  held_call *hc = held_call_new(f);

  hc->fail = HD_EIO;
  hc->why = "/state/handlerd.db: disk I/O error (syncing: Input/output error)";
  local_request(&hc->req, "k", "echo");
  hc->add = 1;
  start_held(hc);
  assert_int_equal(hd_registry_key_count(f->p.reg), 0);

  assert_int_equal(finish_held(hc), HD_EIO);
  assert_string_equal(hc->msg, "cannot save the registration: "
                               "/state/handlerd.db: disk I/O error (syncing: "
                               "Input/output error)");
  assert_int_equal(list_ok(f, &f->p, "").n_handlers, 0);
  nothing_left(f);
}

/* RemoveHandler is answered only after the removal is committed; until
 * then the handler is still registered and served (dropped first, a crash
 * would bring back a handler that had already stopped being served). */
static void test_remove_answers_only_after_the_commit(void **state) {
  fixture *f = *state;
  const char *id;
  held_call *hc = held_call_on_echo(f, &id);

  start_held(hc);
  still_serving(f, id);
  assert_int_equal(store_rows(f->store), 1);

  assert_int_equal(finish_held(hc), HD_OK);
  nothing_left(f);
}

/* A removal whose commit fails is refused with the store's cause; the
 * handler stays registered, served and saved. */
static void test_remove_whose_commit_fails_keeps_the_handler(void **state) {
  fixture *f = *state;
  const char *id;
  held_call *hc = held_call_on_echo(f, &id);

  hc->fail = HD_EBUSY;
  hc->why = "/state/handlerd.db: database or disk is full";
  start_held(hc);
  still_serving(f, id);

  assert_int_equal(finish_held(hc), HD_EBUSY);
  assert_string_equal(hc->msg, "cannot delete the registration: "
                               "/state/handlerd.db: database or disk is full");
  still_serving(f, id);
  assert_int_equal(store_rows(f->store), 1);
  restart_loads(f, 1);
}

/* ---- regressions found by fuzzing -------------------------------------------
 */

/* (The overlong tag-0 refusal is the gRPC edge's now:
 * test_registration_pb.c.) */

static void test_webhook_target_goes_through_the_factory(void **state) {
  fixture *f = *state;
  factory_log log;
  request r;

  stub_request(f, &log, &r);
  const char *id =
      add_signed_webhook(f, &r, "http://example.test/hook", "whsec_Z2l2ZW4=");

  assert_int_equal(log.calls, 1);
  assert_string_equal(log.key, "wk");
  assert_string_equal(log.url, "http://example.test/hook");
  assert_string_equal(log.secret, "whsec_Z2l2ZW4=");
  const hd_handler_info *hi = only_handler(f, &f->p, "", id);
  assert_string_equal(hi->target, "webhook:http://example.test/hook");
  assert_true(hi->secret_set);

  /* The factory's refusal comes back with its message. */
  request_init(&r, "wk");
  set_webhook(&r, "ftp://example.test/", 0);
  assert_string_equal(add_fails(f, &r, HD_EINVAL),
                      "bad url 'ftp://example.test/'");
  assert_int_equal(hd_control_count(f->p.ctl), 1);
}

static void
test_generated_secret_is_stored_in_place_of_new_secret(void **state) {
  fixture *f = *state;
  factory_log log;
  request r;
  hd_control_added reply = {0};

  /* Shown once, in the reply. */
  add_generated_webhook(f, &log, &r, "http://example.test/hook", &reply);
  assert_int_equal(log.new_secret, 1);
  assert_string_equal(log.secret, "");
  /* The caller's request is left as it was. */
  assert_true(r.req.target.webhook.new_secret);
  assert_string_equal(r.req.target.webhook.secret, "");
  assert_true(list_ok(f, &f->p, "wk").handlers[0].secret_set);

  /* Replayed, the webhook gets the generated secret, not a new one. */
  plane q;
  factory_log relog = replay_generated(f, &q, "http://example.test/hook");
  assert_string_equal(relog.key, "wk");
  const hd_handler_info *hi = only_handler(f, &q, "", reply.handler_id);
  assert_true(hi->secret_set);
  plane_close(&q);
}

static void
test_generated_secret_on_a_route_is_stored_in_that_route(void **state) {
  fixture *f = *state;
  factory_log log;
  request r;
  hd_control_added reply = {0};

  stored_stub_request(f, &log, &r);
  add_route(&r, "subscribe", "echo", NULL, 0);
  add_route(&r, "update", NULL, "http://example.test/updates", 1);
  add_generated(f, &r, &reply);
  assert_int_equal(log.calls, 1);

  plane q;
  replay_generated(f, &q, "http://example.test/updates");
  const hd_handler_info *hi = only_handler(f, &q, "wk", reply.handler_id);
  assert_string_equal(route_of(hi, "subscribe"), "local:echo");
  assert_string_equal(route_of(hi, "update"),
                      "webhook:http://example.test/updates");
  plane_close(&q);
}

/* hd_handler_info.async: the target's row says (is_async), for the target
 * or any route; a row without the hook has no async targets; a registration
 * replayed from the store lists as it did. */
static void test_async_in_the_listing_comes_from_the_kind_row(void **state) {
  fixture *f = *state;
  factory_log log;
  request r;

  stored_stub_request(f, &log, &r);
  set_webhook(&r, "http://example.test/async", 0);
  r.req.target.webhook.async = 1;
  const char *async_id = add_ok(f, &f->p, &r, NULL);
  request_init(&r, "wk-sync");
  set_webhook(&r, "http://example.test/sync", 0);
  const char *sync_id = add_ok(f, &f->p, &r, NULL);
  request_init(&r, "wk-route");
  /* The async route first: a later route that is not async leaves it so. */
  add_route(&r, "update", NULL, "http://example.test/updates", 0);
  r.routes[0].target.webhook.async = 1;
  add_route(&r, "subscribe", "echo", NULL, 0);
  add_route(&r, "close", NULL, "http://example.test/close", 0);
  const char *route_id = add_ok(f, &f->p, &r, NULL);
  request_init(&r, "wk-local");
  set_local(&r, "echo");
  const char *local_id = add_ok(f, &f->p, &r, NULL);

  assert_true(only_handler(f, &f->p, "wk", async_id)->async);
  assert_false(only_handler(f, &f->p, "wk-sync", sync_id)->async);
  assert_true(only_handler(f, &f->p, "wk-route", route_id)->async);
  assert_false(only_handler(f, &f->p, "wk-local", local_id)->async);

  /* Replayed: the store kept the setting, the row says async again. */
  plane q;
  factory_log relog = {0};
  assert_int_equal(replay(f, &q, &relog), 4);
  assert_true(only_handler(f, &q, "wk", async_id)->async);
  assert_false(only_handler(f, &q, "wk-sync", sync_id)->async);
  assert_true(only_handler(f, &q, "wk-route", route_id)->async);
  assert_false(only_handler(f, &q, "wk-local", local_id)->async);
  plane_close(&q);

  /* The spec's async is the row's to read: without the hook, nothing is. */
  stub_kind.is_async = NULL;
  request_init(&r, "wk-nohook");
  set_webhook(&r, "http://example.test/async", 0);
  r.req.target.webhook.async = 1;
  const char *nohook_id = add_ok(f, &f->p, &r, NULL);
  assert_false(only_handler(f, &f->p, "wk-nohook", nohook_id)->async);
}

static void test_two_new_secrets_in_one_request_are_einval(void **state) {
  fixture *f = *state;
  factory_log log;
  request r;

  stub_request(f, &log, &r);
  add_route(&r, "update", NULL, "http://example.test/a", 1);
  add_route(&r, "close", NULL, "http://example.test/b", 1);
  assert_non_null(strstr(add_fails(f, &r, HD_EINVAL), "new_secret"));
  assert_int_equal(log.calls, 1); /* the second was refused before */
  assert_int_equal(hd_control_count(f->p.ctl), 0);
  assert_int_equal(hd_registry_key_count(f->p.reg), 0);
}

/* ---- UpdateHandler ----------------------------------------------------------
 */

/* hd_control_update that must succeed; returns the generated secret. */
static const char *update_ok(fixture *f, plane *p, const char *key,
                             const char *id, const request *r) {
  const char *secret = NULL;
  char msg[256] = "";

  if (hd_control_update(p->ctl, key, id, &r->req, f->a, &secret, msg,
                        sizeof(msg)) != HD_OK)
    fail_msg("update %s under '%s' failed: %s", id, key, msg);
  assert_non_null(secret);
  return secret;
}

/* hd_control_update that must fail with `want`; returns the message. */
static const char *update_fails(fixture *f, const char *key, const char *id,
                                const request *r, hd_err want) {
  static char msg[512];

  msg[0] = '\0';
  assert_int_equal(hd_control_update(f->p.ctl, key, id, &r->req, f->a, NULL,
                                     msg, sizeof(msg)),
                   want);
  assert_true(msg[0] != '\0');
  return msg;
}

/* Dispatches `name` (as dispatch(), topic path `path`) to `key`; the
 * results (caller frees). */
static hd_results *dispatch_path(plane *p, const char *key, const char *name,
                                 const char *path) {
  hd_event ev = {.key = key, .name = name};
  hd_handler *set = NULL;
  hd_results *rs = NULL;

  ev.args_kind = HD_ARGS_UPDATE;
  ev.topic.path = path;
  assert_int_equal(hd_registry_get(p->reg, key, &set), HD_OK);
  assert_int_equal(hd_handler_run_sync(set, &ev, &rs), HD_OK);
  hd_handler_unref(set);
  assert_non_null(rs);
  return rs;
}

/* hd_registry_foreach callback: the kind of the (one) member into *ud. */
static void member_kind(const char *key, hd_handler *member, void *ud) {
  (void)key;
  *(const char **)ud = hd_handler_kind(member);
}

/* The ids of the results of dispatching `name` to `key`, in order,
 * separated by spaces (in the arena). */
static const char *result_ids(fixture *f, plane *p, const char *key,
                              const char *name) {
  char buf[512] = "";
  hd_results *rs = dispatch(p, key, name);
  for (size_t i = 0; i < hd_results_count(rs); i++)
    snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s", i ? " " : "",
             hd_results_at(rs, i)->handler_id);
  hd_results_free(rs);
  return hd_arena_strdup(f->a, buf);
}

/* "<a> <b>" or "<a> <b> <c>" (c may be NULL), in the arena. */
static const char *joined(fixture *f, const char *a, const char *b,
                          const char *c) {
  char buf[128];
  snprintf(buf, sizeof(buf), "%s %s%s%s", a, b, c ? " " : "", c ? c : "");
  return hd_arena_strdup(f->a, buf);
}

/* The value type of the one result of an "update" to "k": JSON for echo,
 * INT64 for count. */
static hd_value_type served_by(plane *p) {
  hd_results *rs = dispatch(p, "k", "update");
  assert_int_equal(hd_results_count(rs), 1);
  hd_value_type t = hd_results_at(rs, 0)->value.type;
  hd_results_free(rs);
  return t;
}

/* The target a fresh plane over the fixture's store lists for the one
 * handler `id` under "k" (in the arena). */
static const char *restarted_target(fixture *f, const char *id) {
  plane q;
  assert_int_equal(replay(f, &q, NULL), 1);
  const char *t = only_handler(f, &q, "k", id)->target;
  plane_close(&q);
  return t;
}

/* An update keeps the id, the handler's place among its key's (dispatch
 * and listing order) and, after a restart, the store's load order; what
 * it registers is the new registration, whole. */
static void test_update_keeps_id_and_place_across_a_restart(void **state) {
  fixture *f = *state;
  request r;
  const char *events[] = {"close"};
  const char *ids[3];

  open_store(f);
  for (int i = 0; i < 3; i++) {
    local_request(&r, "k", "echo");
    ids[i] = add_ok(f, &f->p, &r, NULL);
  }
  /* The middle one becomes a counter filtered to "close". */
  local_request(&r, "k", "count");
  r.req.events = events;
  r.req.n_events = 1;
  assert_string_equal(update_ok(f, &f->p, "k", ids[1], &r), "");

  hd_handler_list l = list_in_order(f, &f->p, "k", ids, 3);
  assert_string_equal(l.handlers[1].target, "local:count");
  assert_int_equal(l.handlers[1].n_events, 1);
  assert_string_equal(l.handlers[1].events[0], "close");
  assert_int_equal(hd_control_count(f->p.ctl), 3);
  assert_int_equal(store_rows(f->store), 3);
  /* The new filter applies; the order is the old one. */
  assert_string_equal(result_ids(f, &f->p, "k", "update"),
                      joined(f, ids[0], ids[2], NULL));
  assert_string_equal(result_ids(f, &f->p, "k", "close"),
                      joined(f, ids[0], ids[1], ids[2]));

  /* A restart loads the new registration in the old place. */
  plane q;
  assert_int_equal(replay(f, &q, NULL), 3);
  l = list_ok(f, &q, "k");
  for (int i = 0; i < 3; i++)
    assert_string_equal(l.handlers[i].handler_id, ids[i]);
  assert_string_equal(l.handlers[1].target, "local:count");
  assert_string_equal(result_ids(f, &q, "k", "close"),
                      joined(f, ids[0], ids[1], ids[2]));
  assert_string_equal(result_ids(f, &q, "k", "update"),
                      joined(f, ids[0], ids[2], NULL));
  plane_close(&q);
}

/* A key or id that names nothing is refused as RemoveHandler refuses it;
 * an id is updated under its own key only. */
static void test_update_of_nothing_is_enokey_or_enotfound(void **state) {
  fixture *f = *state;
  request r;
  char want[128];

  local_request(&r, "k", "echo");
  const char *id = add_ok(f, &f->p, &r, NULL);
  local_request(&r, "other", "count");
  assert_string_equal(update_fails(f, "nokey", id, &r, HD_ENOKEY),
                      "no handler registered for key 'nokey'");
  add_ok(f, &f->p, &r, NULL);
  snprintf(want, sizeof(want), "no handler '%s' under key 'other'", id);
  assert_string_equal(update_fails(f, "other", id, &r, HD_ENOTFOUND), want);
  assert_string_equal(only_handler(f, &f->p, "k", id)->target, "local:echo");
}

/* A registration that does not build, or a store that cannot save it,
 * fails the update with its message and changes nothing: the old
 * registration is listed and served. The checks are a new
 * registration's. */
static void test_update_that_fails_changes_nothing(void **state) {
  fixture *f = *state;
  failing_store fs;
  request r;
  const char *events[] = {"a", "b"};

  failing_store_init(&fs);
  hd_control_set_store(f->p.ctl, &fs.base);
  local_request(&r, "k", "echo");
  const char *id = add_ok(f, &f->p, &r, NULL);

  local_request(&r, "k", "no_such_fn");
  assert_non_null(strstr(update_fails(f, "k", id, &r, HD_EINVAL),
                         "no local function named 'no_such_fn'"));
  local_request(&r, "k", "count");
  hd_control_limits lim;
  hd_control_limits_init(&lim);
  lim.max_events = 1;
  hd_control_set_limits(f->p.ctl, &lim);
  r.req.events = events;
  r.req.n_events = 2;
  assert_non_null(strstr(update_fails(f, "k", id, &r, HD_EINVAL),
                         "--max-events-per-handler"));
  r.req.n_events = 0;
  assert_int_equal(fs.puts, 1); /* the add's: nothing was saved since */

  fs.err = HD_EIO;
  fs.why = "/state/handlerd.db: the database is read-only";
  assert_string_equal(update_fails(f, "k", id, &r, HD_EIO),
                      "cannot save the registration: /state/handlerd.db: "
                      "the database is read-only");
  fs.err = HD_EBUSY;
  fs.why = "/state/handlerd.db: database or disk is full";
  assert_string_equal(update_fails(f, "k", id, &r, HD_EBUSY),
                      "cannot save the registration: /state/handlerd.db: "
                      "database or disk is full");
  assert_string_equal(only_handler(f, &f->p, "k", id)->target, "local:echo");
  assert_int_equal(served_by(&f->p), HD_VALUE_JSON);

  fs.err = HD_OK;
  update_ok(f, &f->p, "k", id, &r);
  assert_string_equal(only_handler(f, &f->p, "k", id)->target, "local:count");
  assert_int_equal(served_by(&f->p), HD_VALUE_INT64);
  assert_int_equal(hd_control_count(f->p.ctl), 1);
}

/* UpdateHandler is answered only after its record is committed, and until
 * then the old registration is the one listed and served. */
static void test_update_answers_only_after_the_commit(void **state) {
  fixture *f = *state;
  const char *id;
  held_call *hc = held_call_on_echo(f, &id);

  local_request(&hc->req, "k", "count");
  hc->update = 1;
  start_held(hc);
  assert_string_equal(only_handler(f, &f->p, "k", id)->target, "local:echo");
  assert_int_equal(served_by(&f->p), HD_VALUE_JSON);

  assert_int_equal(finish_held(hc), HD_OK);
  assert_string_equal(only_handler(f, &f->p, "k", id)->target, "local:count");
  assert_int_equal(served_by(&f->p), HD_VALUE_INT64);
  assert_string_equal(restarted_target(f, id), "local:count");
}

/* A commit that fails (after stalling) fails UpdateHandler with the
 * store's cause; the old registration stays listed, served and saved. */
static void test_update_whose_commit_fails_changes_nothing(void **state) {
  fixture *f = *state;
  const char *id;
  held_call *hc = held_call_on_echo(f, &id);

  hc->fail = HD_EIO;
  hc->why = "/state/handlerd.db: disk I/O error";
  local_request(&hc->req, "k", "count");
  hc->update = 1;
  start_held(hc);

  assert_int_equal(finish_held(hc), HD_EIO);
  assert_string_equal(hc->msg, "cannot save the registration: "
                               "/state/handlerd.db: disk I/O error");
  assert_string_equal(only_handler(f, &f->p, "k", id)->target, "local:echo");
  assert_int_equal(served_by(&f->p), HD_VALUE_JSON);
  assert_string_equal(restarted_target(f, id), "local:echo");
}

/* A webhook that names no secret keeps the one it has (a generated one
 * too), across a restart; a secret given, or new_secret, replaces it. */
static void test_update_keeps_a_secret_it_does_not_name(void **state) {
  fixture *f = *state;
  factory_log log;
  request r;
  hd_control_added reply = {0};

  add_generated_webhook(f, &log, &r, "http://example.test/a", &reply);

  request_init(&r, "wk");
  set_webhook(&r, "http://example.test/b", 0);
  assert_string_equal(update_ok(f, &f->p, "wk", reply.handler_id, &r), "");
  assert_string_equal(log.url, "http://example.test/b");
  assert_string_equal(log.secret, GENERATED_SECRET);
  assert_int_equal(log.new_secret, 0);
  assert_true(only_handler(f, &f->p, "wk", reply.handler_id)->secret_set);
  plane q;
  factory_log relog = replay_generated(f, &q, "http://example.test/b");
  (void)relog;
  plane_close(&q);

  r.req.target.webhook.secret = "whsec_Z2l2ZW4=";
  update_ok(f, &f->p, "wk", reply.handler_id, &r);
  assert_string_equal(log.secret, "whsec_Z2l2ZW4=");
  r.req.target.webhook.secret = "";
  r.req.target.webhook.new_secret = 1;
  assert_string_equal(update_ok(f, &f->p, "wk", reply.handler_id, &r),
                      GENERATED_SECRET);
  assert_int_equal(log.new_secret, 1);
}

/* Routes keep the secret of the route of the same event name; a new route,
 * or a target where there were routes, has none to keep. */
static void test_update_keeps_secrets_route_by_route(void **state) {
  fixture *f = *state;
  factory_log log;
  request r;

  stub_request(f, &log, &r);
  add_route(&r, "update", NULL, "http://example.test/u", 0);
  r.routes[0].target.webhook.secret = "whsec_dXBkYXRl";
  add_route(&r, "close", NULL, "http://example.test/c", 0);
  r.routes[1].target.webhook.secret = "whsec_Y2xvc2U=";
  const char *id = add_ok(f, &f->p, &r, NULL);

  request_init(&r, "wk");
  add_route(&r, "other", NULL, "http://example.test/o", 0);
  add_route(&r, "close", NULL, "http://example.test/c2", 0);
  memset(&log, 0, sizeof(log));
  update_ok(f, &f->p, "wk", id, &r);
  assert_int_equal(log.calls, 2);
  assert_string_equal(log.seen[0].url, "http://example.test/o");
  assert_string_equal(log.seen[0].secret, "");
  assert_string_equal(log.seen[1].url, "http://example.test/c2");
  assert_string_equal(log.seen[1].secret, "whsec_Y2xvc2U=");
  /* The caller's registration is left as it was. */
  assert_string_equal(r.routes[1].target.webhook.secret, "");

  request_init(&r, "wk");
  set_webhook(&r, "http://example.test/t", 0);
  memset(&log, 0, sizeof(log));
  update_ok(f, &f->p, "wk", id, &r);
  assert_string_equal(log.seen[0].secret, "");
  assert_false(only_handler(f, &f->p, "wk", id)->secret_set);
}

/* ---- RemoveHandler with a route ---------------------------------------------
 */

static hd_err remove_route(plane *p, const char *key, const char *id,
                           const char *route, char *msg, size_t msg_size) {
  msg[0] = '\0';
  return hd_control_remove_route(p->ctl, key, id, route, msg, msg_size);
}

/* One route goes (the seed's remove(sub_handler)), durably; the handler
 * keeps its id and place; a route it does not have is NOT_FOUND naming
 * it (a simple handler has none); "" removes the whole handler. */
static void test_remove_route_leaves_the_others(void **state) {
  fixture *f = *state;
  request r, o;
  char msg[256], want[128];

  open_store(f);
  request_init(&r, "k");
  add_route(&r, "update", "echo", NULL, 0);
  add_route(&r, "subscribe", "count", NULL, 0);
  add_route(&r, "close", "echo", NULL, 0);
  const char *id = add_ok(f, &f->p, &r, NULL);
  local_request(&o, "k", "echo");
  const char *id2 = add_ok(f, &f->p, &o, NULL);

  assert_int_equal(remove_route(&f->p, "k", id, "subscribe", msg, sizeof(msg)),
                   HD_OK);
  hd_handler_list l = list_ok(f, &f->p, "k");
  assert_int_equal(l.n_handlers, 2);
  assert_string_equal(l.handlers[0].handler_id, id);
  assert_string_equal(l.handlers[1].handler_id, id2);
  assert_int_equal(l.handlers[0].n_routes, 2);
  assert_null(route_of(&l.handlers[0], "subscribe"));
  assert_string_equal(route_of(&l.handlers[0], "update"), "local:echo");
  assert_string_equal(route_of(&l.handlers[0], "close"), "local:echo");
  assert_string_equal(result_ids(f, &f->p, "k", "subscribe"), id2);
  assert_string_equal(result_ids(f, &f->p, "k", "update"),
                      joined(f, id, id2, NULL));

  snprintf(want, sizeof(want), "handler %s has no route 'subscribe'", id);
  assert_int_equal(remove_route(&f->p, "k", id, "subscribe", msg, sizeof(msg)),
                   HD_ENOTFOUND);
  assert_string_equal(msg, want);
  snprintf(want, sizeof(want), "handler %s has no route 'update'", id2);
  assert_int_equal(remove_route(&f->p, "k", id2, "update", msg, sizeof(msg)),
                   HD_ENOTFOUND);
  assert_string_equal(msg, want);
  assert_int_equal(
      remove_route(&f->p, "k", "h-ffffffffffff", "update", msg, sizeof(msg)),
      HD_ENOTFOUND);
  assert_string_equal(msg, "no handler 'h-ffffffffffff' under key 'k'");

  plane q;
  assert_int_equal(replay(f, &q, NULL), 2);
  l = list_ok(f, &q, "k");
  assert_string_equal(l.handlers[0].handler_id, id);
  assert_int_equal(l.handlers[0].n_routes, 2);
  assert_null(route_of(&l.handlers[0], "subscribe"));
  plane_close(&q);

  assert_int_equal(remove_route(&f->p, "k", id2, "", msg, sizeof(msg)), HD_OK);
  assert_int_equal(hd_control_count(f->p.ctl), 1);
}

/* Removing the last route removes the handler, from the store too. */
static void test_remove_last_route_removes_the_handler(void **state) {
  fixture *f = *state;
  request r;
  char msg[256];

  open_store(f);
  request_init(&r, "k");
  add_route(&r, "update", "echo", NULL, 0);
  add_route(&r, "close", "echo", NULL, 0);
  const char *id = add_ok(f, &f->p, &r, NULL);
  assert_int_equal(remove_route(&f->p, "k", id, "update", msg, sizeof(msg)),
                   HD_OK);
  assert_int_equal(only_handler(f, &f->p, "k", id)->n_routes, 1);
  assert_int_equal(remove_route(&f->p, "k", id, "close", msg, sizeof(msg)),
                   HD_OK);
  nothing_left(f);
}

/* A store that cannot save (or delete) fails the removal of a route with
 * its cause; the route stays. */
static void test_remove_route_whose_commit_fails_keeps_it(void **state) {
  fixture *f = *state;
  failing_store fs;
  request r;
  char msg[256];

  failing_store_init(&fs);
  hd_control_set_store(f->p.ctl, &fs.base);
  request_init(&r, "k");
  add_route(&r, "update", "echo", NULL, 0);
  add_route(&r, "close", "echo", NULL, 0);
  const char *id = add_ok(f, &f->p, &r, NULL);
  fs.err = HD_EIO;
  fs.why = "/state/handlerd.db: the database is read-only";
  assert_int_equal(remove_route(&f->p, "k", id, "update", msg, sizeof(msg)),
                   HD_EIO);
  assert_string_equal(msg, "cannot save the registration: /state/handlerd.db: "
                           "the database is read-only");
  assert_int_equal(only_handler(f, &f->p, "k", id)->n_routes, 2);
  assert_string_equal(result_ids(f, &f->p, "k", "update"), id);
}

/* ---- RotateSecret -----------------------------------------------------------
 */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct rotated {
  hd_err err;
  const char *secret;
  int64_t expires_ms;
  char msg[256];
} rotated;

static rotated rotate(fixture *f, const char *key, const char *id,
                      const char *route, int64_t overlap_ms,
                      const char *secret) {
  rotated r = {.secret = NULL};
  r.err = hd_control_rotate_secret(f->p.ctl, key, id, route, overlap_ms, secret,
                                   f->a, &r.secret, &r.expires_ms, r.msg,
                                   sizeof(r.msg));
  return r;
}

/* A rotation that must be refused with `want`; its message (static). */
static const char *rotate_refused(fixture *f, const char *key, const char *id,
                                  const char *route, int64_t overlap_ms,
                                  hd_err want) {
  static char msg[256];
  rotated x = rotate(f, key, id, route, overlap_ms, NULL);

  assert_int_equal(x.err, want);
  snprintf(msg, sizeof(msg), "%s", x.msg);
  return msg;
}

/* The webhook signs with a new secret (generated, or given) and with its
 * old one until the overlap ends (24 h by default); saved, so a restart
 * rebuilds it with both; an update that names no secret keeps the
 * rotation; a second rotation makes the current secret the previous. */
static void test_rotate_secret_keeps_the_old_one_for_the_overlap(void **state) {
  fixture *f = *state;
  factory_log log;
  request r;

  stored_stub_request(f, &log, &r);
  const char *id =
      add_signed_webhook(f, &r, "http://example.test/hook", "whsec_b2xk");

  int64_t before = now_ms();
  rotated x = rotate(f, "wk", id, "", 0, NULL);
  if (x.err != HD_OK)
    fail_msg("rotate: %s", x.msg);
  assert_string_equal(x.secret, GENERATED_SECRET);
  assert_true(x.expires_ms >= before + 24 * 3600 * 1000);
  assert_true(x.expires_ms <= now_ms() + 24 * 3600 * 1000);
  factory_call *fc = &log.seen[log.calls - 1];
  assert_int_equal(fc->new_secret, 1); /* generated by the kind */
  assert_string_equal(fc->previous, "whsec_b2xk");
  assert_int_equal(fc->previous_until_ms, x.expires_ms);
  only_handler(f, &f->p, "wk", id);

  plane q;
  factory_log relog = {0};
  assert_int_equal(replay(f, &q, &relog), 1);
  assert_string_equal(relog.seen[0].secret, GENERATED_SECRET);
  assert_int_equal(relog.seen[0].new_secret, 0);
  assert_string_equal(relog.seen[0].previous, "whsec_b2xk");
  assert_int_equal(relog.seen[0].previous_until_ms, x.expires_ms);
  plane_close(&q);

  before = now_ms();
  x = rotate(f, "wk", id, NULL, 1000, "whsec_bmV3");
  assert_int_equal(x.err, HD_OK);
  assert_string_equal(x.secret, "whsec_bmV3");
  assert_true(x.expires_ms >= before + 1000 && x.expires_ms <= now_ms() + 1000);
  fc = &log.seen[log.calls - 1];
  assert_string_equal(fc->secret, "whsec_bmV3");
  assert_string_equal(fc->previous, GENERATED_SECRET);

  request_init(&r, "wk");
  set_webhook(&r, "http://example.test/moved", 0);
  update_ok(f, &f->p, "wk", id, &r);
  fc = &log.seen[log.calls - 1];
  assert_string_equal(fc->url, "http://example.test/moved");
  assert_string_equal(fc->secret, "whsec_bmV3");
  assert_string_equal(fc->previous, GENERATED_SECRET);
  assert_int_equal(fc->previous_until_ms, x.expires_ms);
}

/* What cannot be rotated: each refused with its code and message, nothing
 * changed. A webhook that had no secret gets one, with nothing to send
 * twice. */
static void test_rotate_secret_refusals(void **state) {
  fixture *f = *state;
  factory_log log;
  request r;
  char want[160];

  stub_request(f, &log, &r);
  add_route(&r, "update", NULL, "http://example.test/u", 0);
  r.routes[0].target.webhook.secret = "whsec_dQ==";
  add_route(&r, "close", "echo", NULL, 0);
  const char *id = add_ok(f, &f->p, &r, NULL);
  request_init(&r, "wp");
  set_webhook(&r, "http://example.test/plain", 0);
  const char *plain = add_ok(f, &f->p, &r, NULL);
  int calls = log.calls;

  assert_non_null(strstr(rotate_refused(f, "wk", id, "", 0, HD_EINVAL),
                         "is an event stream"));
  snprintf(want, sizeof(want), "route 'close' of handler %s is not a webhook",
           id);
  assert_string_equal(rotate_refused(f, "wk", id, "close", 0, HD_EUNSUPPORTED),
                      want);
  snprintf(want, sizeof(want), "handler %s has no route 'nope'", id);
  assert_string_equal(rotate_refused(f, "wk", id, "nope", 0, HD_ENOTFOUND),
                      want);
  rotate_refused(f, "wp", plain, "update", 0, HD_ENOTFOUND);
  rotate_refused(f, "wk", "h-ffffffffffff", "", 0, HD_ENOTFOUND);
  assert_non_null(
      strstr(rotate_refused(f, "wp", plain, "", -1, HD_EINVAL), "overlap_ms"));
  rotate_refused(f, "wp", plain, "", HD_ROTATE_OVERLAP_MAX_MS + 1, HD_EINVAL);
  assert_int_equal(log.calls, calls); /* nothing was built */
  request_init(&r, "lk");
  set_local(&r, "echo");
  const char *local = add_ok(f, &f->p, &r, NULL);
  snprintf(want, sizeof(want), "the target of handler %s is not a webhook",
           local);
  assert_string_equal(rotate_refused(f, "lk", local, "", 0, HD_EUNSUPPORTED),
                      want);

  /* A route's webhook; then one without a secret: nothing to keep. */
  rotated x = rotate(f, "wk", id, "update", 0, NULL);
  assert_int_equal(x.err, HD_OK);
  assert_string_equal(log.seen[log.calls - 1].url, "http://example.test/u");
  assert_string_equal(log.seen[log.calls - 1].previous, "whsec_dQ==");
  assert_string_equal(route_of(only_handler(f, &f->p, "wk", id), "close"),
                      "local:echo");
  x = rotate(f, "wp", plain, "", 0, NULL);
  assert_int_equal(x.err, HD_OK);
  assert_int_equal(x.expires_ms, 0);
  assert_string_equal(log.seen[log.calls - 1].previous, "");
  assert_true(only_handler(f, &f->p, "wp", plain)->secret_set);
}

/* ---- selectors and derive_old_value ----------------------------------------
 */

/* Handlers that keep state between events say it is the replica's own:
 * count and last_value, derive_old_value's memory; echo keeps none. */
static void test_stateful_handlers_list_their_state_scope(void **state) {
  fixture *f = *state;
  static const struct {
    const char *fn;
    int derive;
    const char *scope;
  } cases[] = {{"count", 0, "replica"},
               {"last_value", 0, "replica"},
               {"echo", 0, ""},
               {"echo", 1, "replica"}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    request r;
    char key[16];
    snprintf(key, sizeof(key), "k%zu", i);
    local_request(&r, key, cases[i].fn);
    r.req.derive_old_value = cases[i].derive;
    const char *id = add_ok(f, &f->p, &r, NULL);
    assert_string_equal(only_handler(f, &f->p, key, id)->state_scope,
                        cases[i].scope);
  }
}

/* derive_old_value is listed, applied (the wrapper hands the update on,
 * the handler's kind stays its own in results and in the registry) and
 * saved; an update without it drops it. */
static void test_derive_old_value_is_listed_applied_and_saved(void **state) {
  fixture *f = *state;
  request r;
  const char *kind = NULL;

  open_store(f);
  local_request(&r, "k", "echo");
  r.req.derive_old_value = 1;
  const char *id = add_ok(f, &f->p, &r, NULL);
  const hd_handler_info *hi = only_handler(f, &f->p, "k", id);
  assert_true(hi->derive_old_value);
  assert_string_equal(hi->selector, "");
  hd_results *rs = dispatch_path(&f->p, "k", "update", "a/b");
  assert_int_equal(hd_results_count(rs), 1);
  assert_string_equal(hd_results_at(rs, 0)->handler_id, id);
  assert_string_equal(hd_results_at(rs, 0)->kind, "simple");
  hd_results_free(rs);
  hd_registry_foreach(f->p.reg, "k", member_kind, &kind);
  assert_string_equal(kind, "simple");

  plane q;
  assert_int_equal(replay(f, &q, NULL), 1);
  assert_true(only_handler(f, &q, "k", id)->derive_old_value);
  plane_close(&q);
  r.req.derive_old_value = 0;
  update_ok(f, &f->p, "k", id, &r);
  assert_false(only_handler(f, &f->p, "k", id)->derive_old_value);
  assert_int_equal(replay(f, &q, NULL), 1);
  assert_false(only_handler(f, &q, "k", id)->derive_old_value);
  plane_close(&q);
}

/* A selector that is not UTF-8 is refused before the selector module sees
 * it, as every string of a registration is. */
static void test_selector_that_is_not_utf8_is_einval(void **state) {
  fixture *f = *state;
  request r;

  local_request(&r, "k", "echo");
  r.req.selector = ">a/\xff";
  assert_string_equal(add_fails(f, &r, HD_EINVAL),
                      "selector is not valid UTF-8 (at byte 3)");
  assert_int_equal(hd_control_count(f->p.ctl), 0);
}

/* A selector is compiled at registration (a bad one is INVALID_ARGUMENT
 * with the selector module's message) and filters by topic path; it and
 * derive_old_value are listed, kept by an update, and saved. */
static void test_selector_and_derive_old_value(void **state) {
  fixture *f = *state;
  request r;

  open_store(f);
  local_request(&r, "k", "echo");
  r.req.selector = ">a/b";
  r.req.derive_old_value = 1;
  const char *id = add_ok(f, &f->p, &r, NULL);
  const hd_handler_info *hi = only_handler(f, &f->p, "k", id);
  assert_string_equal(hi->selector, ">a/b");
  assert_true(hi->derive_old_value);
  hd_results *rs = dispatch_path(&f->p, "k", "update", "a/b");
  assert_int_equal(hd_results_count(rs), 1);
  hd_results_free(rs);
  rs = dispatch_path(&f->p, "k", "update", "c/d");
  assert_int_equal(hd_results_count(rs), 0);
  hd_results_free(rs);

  r.req.selector = "?a/(";
  assert_true(strncmp(add_fails(f, &r, HD_EINVAL), "selector: ", 10) == 0);
  assert_true(
      strncmp(update_fails(f, "k", id, &r, HD_EINVAL), "selector: ", 10) == 0);
  assert_string_equal(only_handler(f, &f->p, "k", id)->selector, ">a/b");

  r.req.selector = ">c/d";
  update_ok(f, &f->p, "k", id, &r);
  rs = dispatch_path(&f->p, "k", "update", "a/b");
  assert_int_equal(hd_results_count(rs), 0);
  hd_results_free(rs);
  rs = dispatch_path(&f->p, "k", "update", "c/d");
  assert_int_equal(hd_results_count(rs), 1);
  hd_results_free(rs);

  plane q;
  assert_int_equal(replay(f, &q, NULL), 1);
  hi = only_handler(f, &q, "k", id);
  assert_string_equal(hi->selector, ">c/d");
  assert_true(hi->derive_old_value);
  rs = dispatch_path(&q, "k", "update", "a/b");
  assert_int_equal(hd_results_count(rs), 0);
  hd_results_free(rs);
  plane_close(&q);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_add_local_handler_lists_as_simple),
      T(test_add_with_events_filter_lists_and_applies_it),
      T(test_add_routes_lists_as_event_stream),
      T(test_list_sorts_by_key_then_insertion),
      T(test_add_rejects_bad_requests),
      T(test_key_at_the_limit_is_accepted),
      T(test_webhook_without_factory_is_unsupported),
      T(test_remove_unknown_key_or_id_fails_with_message),
      T(test_remove_then_list),
      T(test_remove_id_under_other_key_is_enotfound),
      T(test_many_handlers_list_and_remove_by_id),
      T(test_forced_id_is_kept_for_every_shape),
      T(test_forced_id_already_registered_is_eexist_and_harmless),
      T(test_forced_id_that_is_not_an_id_is_einval),
      T(test_load_replays_registrations_with_their_ids_in_order),
      T(test_load_without_store_loads_nothing),
      T(test_load_stops_at_a_registration_that_no_longer_builds),
      T(test_load_stops_at_a_saved_record_that_does_not_read),
      T(test_load_skips_a_registration_over_a_limit),
      T(test_store_failures_name_the_cause_and_change_nothing),
      T(test_refused_after_saving_is_deleted_again),
      T(test_add_answers_only_after_the_commit),
      T(test_add_whose_commit_fails_registers_nothing),
      T(test_remove_answers_only_after_the_commit),
      T(test_remove_whose_commit_fails_keeps_the_handler),
      T(test_webhook_target_goes_through_the_factory),
      T(test_generated_secret_is_stored_in_place_of_new_secret),
      T(test_generated_secret_on_a_route_is_stored_in_that_route),
      T(test_two_new_secrets_in_one_request_are_einval),
      T(test_async_in_the_listing_comes_from_the_kind_row),
      T(test_update_keeps_id_and_place_across_a_restart),
      T(test_update_of_nothing_is_enokey_or_enotfound),
      T(test_update_that_fails_changes_nothing),
      T(test_update_answers_only_after_the_commit),
      T(test_update_whose_commit_fails_changes_nothing),
      T(test_update_keeps_a_secret_it_does_not_name),
      T(test_update_keeps_secrets_route_by_route),
      T(test_remove_route_leaves_the_others),
      T(test_remove_last_route_removes_the_handler),
      T(test_remove_route_whose_commit_fails_keeps_it),
      T(test_rotate_secret_keeps_the_old_one_for_the_overlap),
      T(test_rotate_secret_refusals),
      T(test_derive_old_value_is_listed_applied_and_saved),
      T(test_stateful_handlers_list_their_state_scope),
      T(test_selector_that_is_not_utf8_is_einval),
      T(test_selector_and_derive_old_value),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
