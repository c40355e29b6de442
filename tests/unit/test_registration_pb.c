/*
 * Unit tests: the adapter at the gRPC edge (grpc/registration_pb.c):
 * AddHandlerRequest <-> hd_registration, every field, both ways (the async
 * webhook settings, the selector and derive_old_value too);
 * UpdateHandlerRequest -> hd_registration; the listing -> ListHandlersReply
 * (async from the kind row); hd_grpc_control_add / _update / _list over a
 * real
 * control plane (built-ins, a stub webhook kind, a SQLite store), with the
 * refusals that belong to the wire format (a Target without its kind, an
 * unknown field that does not re-encode).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <unistd.h>

#include "registration_pb.h"

#include "test_store_reg.h"
#include "test_store_rows.h"
#include "test_util.h"

/* ---- fixture ---------------------------------------------------------------
 */

typedef struct fixture {
  hd_registry *reg;
  hd_functions *fns;
  hd_control *ctl;
  hd_arena *a;
  hd_store *store;
  char base[64];
  char dir[96];
} fixture;

/* Stands in for the webhook kind's builder: a simple handler, and a
 * generated secret when asked. */
static hd_err stub_build(void *ud, const hd_kind_site *site,
                         const hd_target_spec *t, hd_handler **out,
                         char **secret_out, char *msg, size_t msg_size) {
  (void)ud, (void)site, (void)msg, (void)msg_size;
  if (t->webhook.new_secret)
    *secret_out = strdup("whsec_c3R1Yi1zZWNyZXQ=");
  return hd_simple_new(noop, NULL, NULL, out);
}

/* Stands in for the webhook row's is_async (so the listing's async does
 * not wait on the real row): the control plane asks the row, never the
 * spec. */
static int stub_is_async(const hd_target_spec *t) {
  return t->webhook.async != 0;
}

static hd_kind stub_kind;

static void control_open(fixture *f) {
  assert_int_equal(hd_registry_new(&f->reg), HD_OK);
  assert_int_equal(hd_control_new(f->reg, f->fns, &f->ctl), HD_OK);
  stub_kind = hd_kind_webhook;
  stub_kind.build = stub_build;
  stub_kind.is_async = stub_is_async;
  assert_int_equal(hd_control_set_kind(f->ctl, &stub_kind, f), HD_OK);
  hd_control_set_store(f->ctl, f->store);
}

static void control_close(fixture *f) {
  hd_control_free(f->ctl);
  hd_registry_free(f->reg);
  f->ctl = NULL;
  f->reg = NULL;
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  char msg[256] = "";

  if (!f)
    return -1;
  if (store_tmp_dirs("hd_regpb_", f->base, sizeof(f->base), f->dir,
                     sizeof(f->dir), NULL, 0) != 0)
    return -1;
  if (hd_store_sqlite_open(f->dir, &f->store, msg, sizeof(msg)) != HD_OK)
    return -1;
  assert_int_equal(hd_functions_new(&f->fns), HD_OK);
  assert_int_equal(hd_builtins_register(f->fns, NULL), HD_OK);
  control_open(f);
  f->a = hd_arena_new(4096);
  *state = f;
  return f->a ? 0 : -1;
}

static int teardown(void **state) {
  fixture *f = *state;

  control_close(f);
  hd_functions_free(f->fns);
  hd_arena_free(f->a);
  hd_store_close(f->store);
  remove_store_dir(f->dir);
  rmdir(f->base);
  free(f);
  return 0;
}

/* ---- a request with every field ----------------------------------------- */

typedef struct full_request {
  Handlers__V1__AddHandlerRequest req;
  Handlers__V1__Target target;
  Handlers__V1__Webhook webhook;
  Handlers__V1__Webhook__HeadersEntry h0, h1;
  Handlers__V1__Webhook__HeadersEntry *headers[2];
  uint32_t schedule[3];
  char *events[2];
} full_request;

/* key "k", target webhook with every field set (async with its settings),
 * events "update","close". */
static void full_init(full_request *r) {
  handlers__v1__add_handler_request__init(&r->req);
  handlers__v1__target__init(&r->target);
  handlers__v1__webhook__init(&r->webhook);
  handlers__v1__webhook__headers_entry__init(&r->h0);
  handlers__v1__webhook__headers_entry__init(&r->h1);
  r->h0.key = "X-A";
  r->h0.value = "1";
  r->h1.key = "X-B";
  r->h1.value = "";
  r->headers[0] = &r->h0;
  r->headers[1] = &r->h1;
  r->webhook.url = "http://example.test/hook";
  r->webhook.secret = "whsec_Z2l2ZW4=";
  r->webhook.new_secret = 1;
  r->webhook.headers = r->headers;
  r->webhook.n_headers = 2;
  r->webhook.timeout_ms = 1234;
  r->webhook.max_attempts = 7;
  r->webhook.binary_mode = 1;
  r->webhook.async = 1;
  r->webhook.ordered = 1;
  r->schedule[0] = 250;
  r->schedule[1] = 60000;
  r->schedule[2] = 4294967295u;
  r->webhook.retry_schedule_ms = r->schedule;
  r->webhook.n_retry_schedule_ms = 3;
  r->webhook.max_inflight = 16;
  r->webhook.max_rps = 0.5;
  r->target.kind_case = HANDLERS__V1__TARGET__KIND_WEBHOOK;
  r->target.webhook = &r->webhook;
  r->req.key = "k";
  r->req.target = &r->target;
  r->events[0] = "update";
  r->events[1] = "close";
  r->req.events = r->events;
  r->req.n_events = 2;
}

/* Routes: "a" -> local:echo, "b" -> webhook (url only), "c" -> no value,
 * "d" -> a Target without its kind. */
typedef struct routes_request {
  Handlers__V1__AddHandlerRequest req;
  Handlers__V1__AddHandlerRequest__RoutesEntry e[4];
  Handlers__V1__AddHandlerRequest__RoutesEntry *routes[4];
  Handlers__V1__Target t[4];
  Handlers__V1__Webhook wh;
} routes_request;

/* The targets of routes "a" and "b" (and `n` - 2 more without a kind):
 * t[0] local:echo, t[1] webhook `wh` at http://example.test/b. */
static void route_targets_init(Handlers__V1__Target *t, size_t n,
                               Handlers__V1__Webhook *wh) {
  handlers__v1__webhook__init(wh);
  wh->url = "http://example.test/b";
  for (size_t i = 0; i < n; i++)
    handlers__v1__target__init(&t[i]);
  t[0].kind_case = HANDLERS__V1__TARGET__KIND_LOCAL;
  t[0].local = "echo";
  t[1].kind_case = HANDLERS__V1__TARGET__KIND_WEBHOOK;
  t[1].webhook = wh;
}

static void routes_init(routes_request *r) {
  static const char *const names[] = {"a", "b", "c", "d"};
  handlers__v1__add_handler_request__init(&r->req);
  route_targets_init(r->t, 4, &r->wh);
  for (int i = 0; i < 4; i++) {
    handlers__v1__add_handler_request__routes_entry__init(&r->e[i]);
    r->e[i].key = (char *)names[i];
    r->e[i].value = &r->t[i];
    r->routes[i] = &r->e[i];
  }
  r->e[2].value = NULL;
  r->req.key = "rk";
  r->req.routes = r->routes;
  r->req.n_routes = 4;
}

/* The message packed (malloc'd). */
static uint8_t *pack(const Handlers__V1__AddHandlerRequest *req, size_t *len) {
  *len = handlers__v1__add_handler_request__get_packed_size(req);
  uint8_t *b = malloc(*len ? *len : 1);
  assert_non_null(b);
  handlers__v1__add_handler_request__pack(req, b);
  return b;
}

/* Routes "a" -> local:echo and "b" -> webhook:http://example.test/b lead
 * reg's routes (route_targets_init's). */
static void assert_echo_and_hook_routes(const hd_registration *reg) {
  assert_string_equal(reg->routes[0].event, "a");
  assert_int_equal(reg->routes[0].target.kind, HD_TARGET_LOCAL);
  assert_string_equal(reg->routes[0].target.local, "echo");
  assert_string_equal(reg->routes[1].event, "b");
  assert_int_equal(reg->routes[1].target.kind, HD_TARGET_WEBHOOK);
  assert_string_equal(reg->routes[1].target.webhook.url,
                      "http://example.test/b");
}

/* ---- the adapter's calls, checked ---------------------------------------- */

/* hd_grpc_control_add that must succeed. */
static void grpc_add_ok(fixture *f, const Handlers__V1__AddHandlerRequest *req,
                        Handlers__V1__AddHandlerReply *reply) {
  char msg[256] = "";

  if (hd_grpc_control_add(f->ctl, f->a, req, reply, msg, sizeof(msg)) != HD_OK)
    fail_msg("add under '%s' failed: %s", req->key, msg);
}

/* hd_grpc_control_add that must fail with `want`; its message (static). */
static const char *grpc_add_refused(fixture *f,
                                    const Handlers__V1__AddHandlerRequest *req,
                                    hd_err want) {
  static char msg[512];
  Handlers__V1__AddHandlerReply reply = HANDLERS__V1__ADD_HANDLER_REPLY__INIT;

  msg[0] = '\0';
  assert_int_equal(
      hd_grpc_control_add(f->ctl, f->a, req, &reply, msg, sizeof(msg)), want);
  return msg;
}

/* hd_grpc_control_list for `key` ("" for all) that must succeed. */
static Handlers__V1__ListHandlersReply grpc_list_ok(fixture *f,
                                                    const char *key) {
  Handlers__V1__ListHandlersReply l = HANDLERS__V1__LIST_HANDLERS_REPLY__INIT;
  char msg[256] = "";

  if (hd_grpc_control_list(f->ctl, f->a, key, &l, msg, sizeof(msg)) != HD_OK)
    fail_msg("list '%s' failed: %s", key, msg);
  return l;
}

/* ---- request -> registration -> request ----------------------------------
 */

static void test_every_field_of_a_webhook_target_converts(void **state) {
  fixture *f = *state;
  full_request r;
  hd_registration reg;
  char msg[256] = "";

  full_init(&r);
  r.req.selector = "?a/b.*//";
  r.req.derive_old_value = 1;
  assert_int_equal(
      hd_registration_from_pb(f->a, &r.req, &reg, msg, sizeof(msg)), HD_OK);
  assert_string_equal(reg.key, "k");
  assert_string_equal(reg.selector, "?a/b.*//");
  assert_int_equal(reg.derive_old_value, 1);
  assert_int_equal(reg.target.kind, HD_TARGET_WEBHOOK);
  const hd_webhook_spec *w = &reg.target.webhook;
  assert_string_equal(w->url, "http://example.test/hook");
  assert_string_equal(w->secret, "whsec_Z2l2ZW4=");
  assert_int_equal(w->new_secret, 1);
  assert_int_equal(w->n_headers, 2);
  assert_string_equal(w->headers[0].name, "X-A");
  assert_string_equal(w->headers[0].value, "1");
  assert_string_equal(w->headers[1].name, "X-B");
  assert_string_equal(w->headers[1].value, "");
  assert_int_equal(w->timeout_ms, 1234);
  assert_int_equal(w->max_attempts, 7);
  assert_int_equal(w->binary_mode, 1);
  assert_int_equal(w->async, 1);
  assert_int_equal(w->ordered, 1);
  assert_int_equal(w->n_retry_schedule, 3);
  assert_int_equal(w->retry_schedule_ms[0], 250);
  assert_int_equal(w->retry_schedule_ms[1], 60000);
  assert_int_equal(w->retry_schedule_ms[2], 4294967295u);
  /* A copy in the arena, not the message's array (registration_pb.h). */
  assert_true(w->retry_schedule_ms != r.schedule);
  r.schedule[0] = 1;
  assert_int_equal(w->retry_schedule_ms[0], 250);
  assert_int_equal(w->max_inflight, 16);
  assert_true(w->max_rps == 0.5);
  assert_int_equal(reg.n_events, 2);
  assert_string_equal(reg.events[0], "update");
  assert_string_equal(reg.events[1], "close");
  assert_int_equal(reg.n_routes, 0);
}

static void test_routes_convert_with_missing_targets_as_none(void **state) {
  fixture *f = *state;
  routes_request r;
  hd_registration reg;
  char msg[256] = "";

  routes_init(&r);
  assert_int_equal(
      hd_registration_from_pb(f->a, &r.req, &reg, msg, sizeof(msg)), HD_OK);
  assert_string_equal(reg.key, "rk");
  assert_int_equal(reg.target.kind, HD_TARGET_NONE);
  assert_int_equal(reg.n_routes, 4);
  assert_echo_and_hook_routes(&reg);
  assert_int_equal(reg.routes[1].target.webhook.n_headers, 0);
  assert_int_equal(reg.routes[1].target.webhook.async, 0);
  assert_null(reg.routes[1].target.webhook.retry_schedule_ms);
  assert_int_equal(reg.routes[1].target.webhook.n_retry_schedule, 0);
  assert_int_equal(reg.routes[2].target.kind, HD_TARGET_NONE);
  assert_int_equal(reg.routes[3].target.kind, HD_TARGET_NONE);
  assert_int_equal(reg.n_events, 0);

  /* The control plane names the route that has no target. */
  hd_control_added added;
  assert_int_equal(
      hd_control_add(f->ctl, &reg, NULL, f->a, &added, msg, sizeof(msg)),
      HD_EINVAL);
  assert_string_equal(msg, "route 'c': target has neither local nor webhook "
                           "set");
}

/* Packed, converted to a registration and back, packed again: the same
 * bytes. */
static void round_trip(fixture *f, const Handlers__V1__AddHandlerRequest *req) {
  hd_registration reg;
  Handlers__V1__AddHandlerRequest *back = NULL;
  char msg[256] = "";
  size_t len1, len2;

  assert_int_equal(hd_registration_from_pb(f->a, req, &reg, msg, sizeof(msg)),
                   HD_OK);
  assert_int_equal(hd_registration_to_pb(f->a, &reg, &back), HD_OK);
  uint8_t *b1 = pack(req, &len1), *b2 = pack(back, &len2);
  assert_int_equal(len1, len2);
  assert_memory_equal(b1, b2, len1);
  free(b1);
  free(b2);
}

static void test_round_trip_keeps_every_field(void **state) {
  fixture *f = *state;
  full_request r;
  routes_request rr;
  Handlers__V1__AddHandlerRequest local =
      HANDLERS__V1__ADD_HANDLER_REQUEST__INIT;
  Handlers__V1__Target t = HANDLERS__V1__TARGET__INIT;

  full_init(&r);
  round_trip(f, &r.req);
  r.req.selector = "#>a////*b/.*";
  r.req.derive_old_value = 1;
  round_trip(f, &r.req);
  routes_init(&rr);
  rr.req.n_routes = 2; /* c and d have no kind: they go out as none */
  round_trip(f, &rr.req);
  t.kind_case = HANDLERS__V1__TARGET__KIND_LOCAL;
  t.local = "echo";
  local.key = "k";
  local.target = &t;
  round_trip(f, &local);
}

/* hd_registration -> request, field by field (the round trip above would
 * not see a field dropped both ways). */
static void test_async_settings_convert_to_the_request(void **state) {
  fixture *f = *state;
  static const uint32_t schedule[] = {10, 20};
  hd_route_spec routes[2] = {route_webhook("a", "http://example.test/a"),
                             route_webhook("b", "http://example.test/b")};
  hd_registration reg = reg_routes("k", routes, 2);
  Handlers__V1__AddHandlerRequest *req = NULL;

  routes[0].target.webhook.async = 1;
  routes[0].target.webhook.ordered = 1;
  routes[0].target.webhook.retry_schedule_ms = schedule;
  routes[0].target.webhook.n_retry_schedule = 2;
  routes[0].target.webhook.max_inflight = 3;
  routes[0].target.webhook.max_rps = 7.25;
  assert_int_equal(hd_registration_to_pb(f->a, &reg, &req), HD_OK);
  assert_int_equal(req->n_routes, 2);
  const Handlers__V1__Webhook *wa = req->routes[0]->value->webhook;
  assert_true(wa->async);
  assert_true(wa->ordered);
  assert_int_equal(wa->n_retry_schedule_ms, 2);
  assert_true(wa->retry_schedule_ms != schedule); /* a copy in the arena */
  assert_int_equal(wa->retry_schedule_ms[0], 10);
  assert_int_equal(wa->retry_schedule_ms[1], 20);
  assert_int_equal(wa->max_inflight, 3);
  assert_true(wa->max_rps == 7.25);
  const Handlers__V1__Webhook *wb = req->routes[1]->value->webhook;
  assert_false(wb->async);
  assert_false(wb->ordered);
  assert_int_equal(wb->n_retry_schedule_ms, 0);
  assert_null(wb->retry_schedule_ms);
  assert_int_equal(wb->max_inflight, 0);
  assert_true(wb->max_rps == 0.0);
}

static void test_target_present_without_kind_is_refused(void **state) {
  fixture *f = *state;
  Handlers__V1__AddHandlerRequest req = HANDLERS__V1__ADD_HANDLER_REQUEST__INIT;
  Handlers__V1__Target t = HANDLERS__V1__TARGET__INIT;
  hd_registration reg;
  char msg[256] = "";

  req.key = "k";
  req.target = &t; /* present, no kind */
  assert_int_equal(hd_registration_from_pb(f->a, &req, &reg, msg, sizeof(msg)),
                   HD_EINVAL);
  assert_string_equal(msg, "target: target has neither local nor webhook set");
  assert_non_null(strstr(grpc_add_refused(f, &req, HD_EINVAL), "neither"));
  assert_int_equal(hd_control_count(f->ctl), 0);
}

/* ---- the calls -------------------------------------------------------------
 */

/* A new control plane over the same store loads `want` registrations. */
static void restart_loads(fixture *f, size_t want) {
  size_t loaded = 99;
  char msg[256] = "";

  control_close(f);
  control_open(f);
  if (hd_control_load(f->ctl, &loaded, msg, sizeof(msg)) != HD_OK)
    fail_msg("load failed: %s", msg);
  assert_int_equal(loaded, want);
}

/* Found by fuzz_control (commit 82f7007; the seed is
 * tests/fuzz/seeds/fuzz_control/overlong-tag0-unknown-field): protobuf-c
 * accepts an unknown field whose tag, 0, is written in an overlong varint
 * (80 00), keeps it, and writes it back as a plain 00, which its own
 * decoder refuses. A wire-format matter: the adapter refuses it. */
static void test_add_refuses_a_request_that_does_not_reencode(void **state) {
  fixture *f = *state;
  /* key: "k", target { local: "echo" }, then field 0 (overlong) = 1. */
  static const uint8_t wire[] = {0x0a, 0x01, 'k', 0x12, 0x06, 0x0a, 0x04,
                                 'e',  'c',  'h', 'o',  0x80, 0x00, 0x01};
  static const size_t clean_len = 11; /* without the unknown field */
  Handlers__V1__AddHandlerReply reply = HANDLERS__V1__ADD_HANDLER_REPLY__INIT;

  Handlers__V1__AddHandlerRequest *req =
      handlers__v1__add_handler_request__unpack(NULL, sizeof(wire), wire);
  /* The premise: the decoder takes it, and what it writes back does not
   * decode. */
  assert_non_null(req);
  assert_string_equal(req->key, "k");
  assert_int_equal(req->base.n_unknown_fields, 1);
  size_t len;
  uint8_t *again = pack(req, &len);
  assert_null(handlers__v1__add_handler_request__unpack(NULL, len, again));
  free(again);

  assert_string_equal(grpc_add_refused(f, req, HD_EINVAL),
                      "the request does not survive re-encoding (a "
                      "malformed unknown field?): not registered");
  handlers__v1__add_handler_request__free_unpacked(req, NULL);
  assert_int_equal(hd_control_count(f->ctl), 0);
  assert_int_equal(hd_registry_key_count(f->reg), 0);
  assert_int_equal(store_rows(f->store), 0);

  /* The same request without the field is registered, and restarts. */
  req = handlers__v1__add_handler_request__unpack(NULL, clean_len, wire);
  assert_non_null(req);
  grpc_add_ok(f, req, &reply);
  handlers__v1__add_handler_request__free_unpacked(req, NULL);
  restart_loads(f, 1);
}

/* The RoutesEntry value for `event` in a HandlerInfo, or NULL. */
static const char *route_of(const Handlers__V1__HandlerInfo *hi,
                            const char *event) {
  for (size_t i = 0; i < hi->n_routes; i++)
    if (strcmp(hi->routes[i]->key, event) == 0)
      return hi->routes[i]->value;
  return NULL;
}

static void test_add_and_list_through_the_adapter(void **state) {
  fixture *f = *state;
  full_request r;
  routes_request rr;
  Handlers__V1__AddHandlerReply hook = HANDLERS__V1__ADD_HANDLER_REPLY__INIT;
  Handlers__V1__AddHandlerReply stream = HANDLERS__V1__ADD_HANDLER_REPLY__INIT;
  Handlers__V1__ListHandlersReply l = HANDLERS__V1__LIST_HANDLERS_REPLY__INIT;
  char msg[256] = "";

  full_init(&r);
  r.webhook.secret = ""; /* new_secret alone */
  grpc_add_ok(f, &r.req, &hook);
  assert_true(strncmp(hook.handler_id, "h-", 2) == 0);
  assert_string_equal(hook.secret, "whsec_c3R1Yi1zZWNyZXQ=");
  routes_init(&rr);
  rr.req.n_routes = 2;
  grpc_add_ok(f, &rr.req, &stream);
  assert_string_equal(stream.secret, "");

  l = grpc_list_ok(f, "");
  assert_int_equal(l.n_handlers, 2);
  const Handlers__V1__HandlerInfo *hi = l.handlers[0];
  assert_string_equal(hi->key, "k");
  assert_string_equal(hi->handler_id, hook.handler_id);
  assert_int_equal(hi->kind, HANDLERS__V1__HANDLER_KIND__SIMPLE);
  assert_string_equal(hi->target, "webhook:http://example.test/hook");
  assert_int_equal(hi->n_events, 2);
  assert_string_equal(hi->events[0], "update");
  assert_string_equal(hi->events[1], "close");
  assert_int_equal(hi->n_routes, 0);
  assert_true(hi->secret_set);
  assert_true(hi->async);
  hi = l.handlers[1];
  assert_string_equal(hi->key, "rk");
  assert_string_equal(hi->handler_id, stream.handler_id);
  assert_int_equal(hi->kind, HANDLERS__V1__HANDLER_KIND__EVENT_STREAM);
  assert_string_equal(hi->target, "");
  assert_int_equal(hi->n_routes, 2);
  assert_string_equal(route_of(hi, "a"), "local:echo");
  assert_string_equal(route_of(hi, "b"), "webhook:http://example.test/b");
  assert_false(hi->secret_set);
  assert_false(hi->async); /* local:echo and a webhook that is not async */

  /* The reply packs (every string set). */
  size_t len = protobuf_c_message_get_packed_size(&l.base);
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  assert_int_equal(protobuf_c_message_pack(&l.base, buf), len);
  free(buf);

  /* One key only, and an unknown key with its message. */
  l = grpc_list_ok(f, "rk");
  assert_int_equal(l.n_handlers, 1);
  assert_int_equal(
      hd_grpc_control_list(f->ctl, f->a, "nope", &l, msg, sizeof(msg)),
      HD_ENOKEY);
  assert_string_equal(msg, "no handler registered for key 'nope'");

  /* The control plane's refusals come back as they are. */
  r.req.key = "";
  assert_string_equal(grpc_add_refused(f, &r.req, HD_EINVAL), "key is empty");
}

/* HandlerInfo.async: set when the target, or any one route's, is async;
 * kept across a restart (the store's record carries the setting). */
static void test_listing_shows_async_for_a_target_or_any_route(void **state) {
  fixture *f = *state;
  routes_request rr;
  full_request sync;
  Handlers__V1__AddHandlerReply reply = HANDLERS__V1__ADD_HANDLER_REPLY__INIT;

  routes_init(&rr);
  rr.req.n_routes = 2; /* a -> local:echo, b -> webhook */
  rr.wh.async = 1;     /* b only */
  grpc_add_ok(f, &rr.req, &reply);
  full_init(&sync);
  /* Not async (the webhook kind refuses the async settings without it). */
  sync.webhook.async = 0;
  sync.webhook.ordered = 0;
  sync.webhook.n_retry_schedule_ms = 0;
  sync.webhook.max_inflight = 0;
  sync.webhook.max_rps = 0;
  sync.webhook.new_secret = 0;
  grpc_add_ok(f, &sync.req, &reply);

  for (int round = 0; round < 2; round++) {
    if (round == 1)
      restart_loads(f, 2);
    Handlers__V1__ListHandlersReply l = grpc_list_ok(f, "");
    assert_int_equal(l.n_handlers, 2);
    assert_string_equal(l.handlers[0]->key, "k");
    assert_false(l.handlers[0]->async);
    assert_string_equal(l.handlers[1]->key, "rk");
    assert_true(l.handlers[1]->async);
    assert_int_equal(l.handlers[1]->n_disabled, 0); /* admin.c's to fill */
  }
}

static void test_list_to_pb_converts_every_field(void **state) {
  fixture *f = *state;
  const char *events[] = {"update"};
  hd_route_info routes[] = {{"a", "local:echo"}, {"b", "webhook:http://x/"}};
  hd_handler_info items[] = {
      {.key = "k1",
       .handler_id = "h-000000000001",
       .kind = HD_SHAPE_SIMPLE,
       .target = "local:count",
       .events = events,
       .n_events = 1},
      {.key = "k2",
       .handler_id = "h-000000000002",
       .kind = HD_SHAPE_EVENT_STREAM,
       .target = "",
       .routes = routes,
       .n_routes = 2,
       .secret_set = 1,
       .async = 1,
       .selector = ">x/y//",
       .derive_old_value = 1},
  };
  hd_handler_list l = {items, 2};
  Handlers__V1__ListHandlersReply reply =
      HANDLERS__V1__LIST_HANDLERS_REPLY__INIT;

  assert_int_equal(hd_handler_list_to_pb(f->a, &l, &reply), HD_OK);
  assert_int_equal(reply.n_handlers, 2);
  assert_string_equal(reply.handlers[0]->key, "k1");
  assert_string_equal(reply.handlers[0]->handler_id, "h-000000000001");
  assert_int_equal(reply.handlers[0]->kind, HANDLERS__V1__HANDLER_KIND__SIMPLE);
  assert_string_equal(reply.handlers[0]->target, "local:count");
  assert_int_equal(reply.handlers[0]->n_events, 1);
  assert_string_equal(reply.handlers[0]->events[0], "update");
  assert_false(reply.handlers[0]->secret_set);
  assert_false(reply.handlers[0]->async);
  assert_int_equal(reply.handlers[1]->kind,
                   HANDLERS__V1__HANDLER_KIND__EVENT_STREAM);
  assert_int_equal(reply.handlers[1]->n_routes, 2);
  assert_string_equal(reply.handlers[1]->routes[1]->key, "b");
  assert_string_equal(reply.handlers[1]->routes[1]->value, "webhook:http://x/");
  assert_true(reply.handlers[1]->secret_set);
  assert_true(reply.handlers[1]->async);
  assert_string_equal(reply.handlers[0]->selector, ""); /* NULL: none */
  assert_false(reply.handlers[0]->derive_old_value);
  assert_string_equal(reply.handlers[1]->selector, ">x/y//");
  assert_true(reply.handlers[1]->derive_old_value);

  hd_handler_list none = {NULL, 0};
  assert_int_equal(hd_handler_list_to_pb(f->a, &none, &reply), HD_OK);
  assert_int_equal(reply.n_handlers, 0);
}

/* ---- UpdateHandler ---------------------------------------------------------
 */

/* An UpdateHandlerRequest with routes "a" -> local:echo and "b" ->
 * webhook, a selector and derive_old_value. */
typedef struct update_request {
  Handlers__V1__UpdateHandlerRequest req;
  Handlers__V1__UpdateHandlerRequest__RoutesEntry e[2];
  Handlers__V1__UpdateHandlerRequest__RoutesEntry *routes[2];
  Handlers__V1__Target t[2];
  Handlers__V1__Webhook wh;
} update_request;

static void update_init(update_request *r) {
  handlers__v1__update_handler_request__init(&r->req);
  route_targets_init(r->t, 2, &r->wh);
  r->wh.timeout_ms = 77;
  for (int i = 0; i < 2; i++) {
    handlers__v1__update_handler_request__routes_entry__init(&r->e[i]);
    r->e[i].key = i ? "b" : "a";
    r->e[i].value = &r->t[i];
    r->routes[i] = &r->e[i];
  }
  r->req.key = "uk";
  r->req.handler_id = "h-000000000001";
  r->req.routes = r->routes;
  r->req.n_routes = 2;
  r->req.selector = "*a/.*";
  r->req.derive_old_value = 1;
}

/* Every field of UpdateHandlerRequest reaches the registration as
 * AddHandlerRequest's does; a Target without its kind is refused alike. */
static void test_update_request_converts_like_add(void **state) {
  fixture *f = *state;
  update_request r;
  hd_registration reg;
  char msg[256] = "";
  char *events[] = {"update"};
  Handlers__V1__Target empty = HANDLERS__V1__TARGET__INIT;

  update_init(&r);
  assert_int_equal(
      hd_registration_from_update_pb(f->a, &r.req, &reg, msg, sizeof(msg)),
      HD_OK);
  assert_string_equal(reg.key, "uk");
  assert_int_equal(reg.target.kind, HD_TARGET_NONE);
  assert_int_equal(reg.n_routes, 2);
  assert_echo_and_hook_routes(&reg);
  assert_int_equal(reg.routes[1].target.webhook.timeout_ms, 77);
  assert_string_equal(reg.selector, "*a/.*");
  assert_int_equal(reg.derive_old_value, 1);
  assert_int_equal(reg.n_events, 0);

  r.req.n_routes = 0;
  r.req.target = &r.t[0];
  r.req.events = events;
  r.req.n_events = 1;
  assert_int_equal(
      hd_registration_from_update_pb(f->a, &r.req, &reg, msg, sizeof(msg)),
      HD_OK);
  assert_int_equal(reg.target.kind, HD_TARGET_LOCAL);
  assert_int_equal(reg.n_events, 1);
  assert_string_equal(reg.events[0], "update");
  r.req.target = &empty;
  assert_int_equal(
      hd_registration_from_update_pb(f->a, &r.req, &reg, msg, sizeof(msg)),
      HD_EINVAL);
  assert_string_equal(msg, "target: target has neither local nor webhook set");
}

/* UpdateHandler through the adapter: the same id, the new registration
 * listed (and restored after a restart), a generated secret in the reply;
 * the control plane's refusals and a request that does not re-encode come
 * back with their messages, changing nothing. */
static void test_update_through_the_adapter(void **state) {
  fixture *f = *state;
  routes_request rr;
  update_request u;
  Handlers__V1__AddHandlerReply added = HANDLERS__V1__ADD_HANDLER_REPLY__INIT;
  Handlers__V1__UpdateHandlerReply reply =
      HANDLERS__V1__UPDATE_HANDLER_REPLY__INIT;
  char msg[256] = "";

  routes_init(&rr);
  rr.req.n_routes = 1; /* a -> local:echo */
  grpc_add_ok(f, &rr.req, &added);
  update_init(&u);
  u.req.key = "rk";
  u.req.handler_id = added.handler_id;
  u.req.selector = ""; /* the selector module is selector.c's to test */
  u.wh.new_secret = 1;
  assert_int_equal(
      hd_grpc_control_update(f->ctl, f->a, &u.req, &reply, msg, sizeof(msg)),
      HD_OK);
  assert_string_equal(reply.secret, "whsec_c3R1Yi1zZWNyZXQ=");
  Handlers__V1__ListHandlersReply l = grpc_list_ok(f, "");
  assert_int_equal(l.n_handlers, 1);
  assert_string_equal(l.handlers[0]->handler_id, added.handler_id);
  assert_int_equal(l.handlers[0]->n_routes, 2);
  assert_string_equal(route_of(l.handlers[0], "b"),
                      "webhook:http://example.test/b");
  assert_true(l.handlers[0]->secret_set);
  assert_true(l.handlers[0]->derive_old_value);
  restart_loads(f, 1);

  /* Refusals: an unknown id, a bad registration; nothing changes. */
  u.req.handler_id = "h-0000000000ff";
  assert_int_equal(
      hd_grpc_control_update(f->ctl, f->a, &u.req, &reply, msg, sizeof(msg)),
      HD_ENOTFOUND);
  assert_string_equal(msg, "no handler 'h-0000000000ff' under key 'rk'");
  u.req.handler_id = added.handler_id;
  u.t[0].local = "no_such_fn";
  assert_int_equal(
      hd_grpc_control_update(f->ctl, f->a, &u.req, &reply, msg, sizeof(msg)),
      HD_EINVAL);
  assert_non_null(strstr(msg, "no_such_fn"));

  /* An unknown field that does not re-encode (field 0, overlong). */
  static const uint8_t wire[] = {0x0a, 0x02, 'r',  'k',  0x12,
                                 0x01, 'h',  0x80, 0x00, 0x01};
  Handlers__V1__UpdateHandlerRequest *bad =
      handlers__v1__update_handler_request__unpack(NULL, sizeof(wire), wire);
  assert_non_null(bad);
  assert_int_equal(
      hd_grpc_control_update(f->ctl, f->a, bad, &reply, msg, sizeof(msg)),
      HD_EINVAL);
  assert_string_equal(msg, "the request does not survive re-encoding (a "
                           "malformed unknown field?): nothing changed");
  handlers__v1__update_handler_request__free_unpacked(bad, NULL);

  l = grpc_list_ok(f, "");
  assert_int_equal(l.handlers[0]->n_routes, 2);
  assert_string_equal(route_of(l.handlers[0], "a"), "local:echo");
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_every_field_of_a_webhook_target_converts),
      T(test_routes_convert_with_missing_targets_as_none),
      T(test_round_trip_keeps_every_field),
      T(test_async_settings_convert_to_the_request),
      T(test_target_present_without_kind_is_refused),
      T(test_add_refuses_a_request_that_does_not_reencode),
      T(test_add_and_list_through_the_adapter),
      T(test_listing_shows_async_for_a_target_or_any_route),
      T(test_list_to_pb_converts_every_field),
      T(test_update_request_converts_like_add),
      T(test_update_through_the_adapter),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
