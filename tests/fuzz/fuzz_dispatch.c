/*
 * fuzz_dispatch: the bytes of one DispatchRequest, as the server gets them
 * for Dispatch and for each DispatchStream item (server.c start_dispatch):
 * hd_proto_decode_dispatch -> hd_proto_to_event (validation) -> the
 * registry -> the built-in handlers -> the reply (hd_proto_from_results,
 * packed). Checks on the way:
 *   - a refusal is INVALID_ARGUMENT with a message;
 *   - an accepted event's JSON (what echo/log/webhooks send) parses (with
 *     JSON_ALLOW_NUL: validation accepts "\u0000" in JSON values), its
 *     CloudEvent parses, and a deep copy validates and prints the same;
 *   - the reply packs and unpacks to as many results; JSON and string
 *     results have no NUL inside (the proto field is a C string).
 * Keys "k", "prices" and "all" have handlers (echo, count, last_value, log,
 * and an event-stream routing update/subscribe); the registry is rebuilt
 * every few thousand inputs so count/last_value state stays small.
 */
#include "arena.h"
#include "cloudevents.h"
#include "fuzz_util.h"
#include "handlerd/handlerd.h"
#include "proto_event.h"

#include <grpc/status.h>
#include <jansson.h>

static hd_functions *fns;
static hd_registry *reg;
static unsigned runs;

static void add_fn(const char *key, const char *fn) {
  hd_handler *h = NULL;
  if (hd_functions_make_handler(fns, fn, &h) || hd_registry_add(reg, key, h))
    abort();
  hd_handler_unref(h);
}

static void build_registry(void) {
  hd_registry_free(reg);
  if (hd_registry_new(&reg))
    abort();
  add_fn("k", "echo");
  add_fn("prices", "echo");
  add_fn("prices", "count");
  add_fn("prices", "last_value");
  static const char *const all[] = {"echo", "count", "last_value", "log"};
  for (size_t i = 0; i < 4; i++)
    add_fn("all", all[i]);
  /* An event-stream: update -> last_value, subscribe -> count. */
  hd_handler *st = NULL, *lv = NULL, *cnt = NULL;
  if (hd_stream_new(&st) || hd_functions_make_handler(fns, "last_value", &lv) ||
      hd_functions_make_handler(fns, "count", &cnt) ||
      hd_stream_route(st, "update", lv) ||
      hd_stream_route(st, "subscribe", cnt) || hd_registry_add(reg, "all", st))
    abort();
  hd_handler_unref(lv);
  hd_handler_unref(cnt);
  hd_handler_unref(st);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  hd_log_set_level(HD_LOG_ERROR);
  if (hd_functions_new(&fns) || hd_builtins_register(fns, "/dev/null"))
    abort();
  build_registry();
  return 0;
}

static void check_json_text(const char *text) {
  FUZZ_CHECK(text != NULL);
  json_error_t je;
  json_t *j = json_loads(text, JSON_ALLOW_NUL, &je);
  if (!j)
    fprintf(stderr, "does not parse (%s): %s\n", je.text, text);
  FUZZ_CHECK(j != NULL);
  json_decref(j);
}

static void check_event(const hd_event *ev) {
  char msg[512];
  char *text = hd_event_to_json(ev);
  check_json_text(text);

  hd_event *copy = hd_event_copy(ev);
  FUZZ_CHECK(copy != NULL);
  FUZZ_CHECK(hd_event_validate(copy, msg, sizeof(msg)) == HD_OK);
  char *text2 = hd_event_to_json(copy);
  FUZZ_CHECK(text2 != NULL && strcmp(text, text2) == 0);
  free(text2);
  hd_event_free(copy);
  free(text);

  hd_ce_meta meta = {"00000000-0000-4000-8000-000000000000",
                     "//handlerd/fuzz/keys/k", 1764085560610744000};
  char *ce = hd_ce_structured(ev, &meta);
  check_json_text(ce);
  free(ce);
}

typedef struct done_box {
  hd_results *rs;
  int calls;
} done_box;

static void on_done(hd_results *rs, void *ud) {
  done_box *b = ud;
  b->calls++;
  b->rs = rs;
}

static void check_reply(hd_arena *a, const hd_results *rs) {
  Handlers__V1__DispatchReply reply = HANDLERS__V1__DISPATCH_REPLY__INIT;
  FUZZ_CHECK(hd_proto_from_results(a, rs, &reply.results, &reply.n_results) ==
             HD_OK);
  FUZZ_CHECK(reply.n_results == hd_results_count(rs));
  for (size_t i = 0; i < hd_results_count(rs); i++) {
    const hd_result *r = hd_results_at(rs, i);
    if (r->value.type == HD_VALUE_JSON || r->value.type == HD_VALUE_STRING)
      FUZZ_CHECK(strlen(r->value.u.bytes.data) == r->value.u.bytes.len);
  }
  size_t len = protobuf_c_message_get_packed_size(&reply.base);
  uint8_t *buf = malloc(len ? len : 1);
  FUZZ_CHECK(buf != NULL);
  FUZZ_CHECK(protobuf_c_message_pack(&reply.base, buf) == len);
  Handlers__V1__DispatchReply *back =
      handlers__v1__dispatch_reply__unpack(NULL, len, buf);
  FUZZ_CHECK(back != NULL && back->n_results == reply.n_results);
  handlers__v1__dispatch_reply__free_unpacked(back, NULL);
  free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char msg[512] = "";
  if (++runs % 4096 == 0)
    build_registry();
  hd_arena *a = hd_arena_new(2048);
  if (!a)
    return 0;
  Handlers__V1__DispatchRequest *req;
  hd_event ev;
  hd_err err = hd_proto_decode_dispatch(a, data, size, &req, msg, sizeof(msg));
  if (err == HD_OK)
    err = hd_proto_to_event(a, req, &ev, msg, sizeof(msg));
  if (err != HD_OK) {
    FUZZ_CHECK(err == HD_EINVAL || err == HD_ENOMEM);
    FUZZ_CHECK(hd_proto_status_of(err) != GRPC_STATUS_OK);
    FUZZ_CHECK(msg[0] != '\0');
    hd_arena_free(a);
    return 0;
  }
  check_event(&ev);

  done_box box = {NULL, 0};
  err = hd_registry_dispatch(reg, &ev, on_done, &box);
  if (err == HD_OK) {
    /* Local handlers complete before dispatch returns. */
    FUZZ_CHECK(box.calls == 1 && box.rs != NULL);
    check_reply(a, box.rs);
    hd_results_free(box.rs);
  } else {
    FUZZ_CHECK(err == HD_ENOKEY && box.calls == 0);
  }
  hd_arena_free(a);
  return 0;
}
