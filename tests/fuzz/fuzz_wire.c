/*
 * libFuzzer target for everything handlerd does with bytes from the wire
 * before a handler runs: DispatchRequest decode -> validation -> the event
 * as JSON, a deep copy and a CloudEvent; AddHandlerRequest decode -> the
 * control plane (add, list, remove) on a real registry with the built-ins.
 * The first byte picks the message type.
 *
 *   scripts/fuzz [seconds]
 */
#include "arena.h"
#include "cloudevents.h"
#include "control.h"
#include "handlerd/handlerd.h"
#include "proto_event.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static hd_registry *reg;
static hd_functions *fns;
static hd_control *ctl;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  hd_log_set_level(HD_LOG_ERROR);
  if (hd_registry_new(&reg) || hd_functions_new(&fns) ||
      hd_builtins_register(fns, "/dev/null") || hd_control_new(reg, fns, &ctl))
    abort();
  return 0;
}

static void fuzz_dispatch(hd_arena *a, const uint8_t *data, size_t size) {
  char msg[512];
  Handlers__V1__DispatchRequest *req;
  hd_event ev;
  if (hd_proto_decode_dispatch(a, data, size, &req, msg, sizeof(msg)) ||
      hd_proto_to_event(a, req, &ev, msg, sizeof(msg)))
    return;
  free(hd_event_to_json(&ev));
  hd_event_free(hd_event_copy(&ev));
  hd_ce_meta meta = {"00000000-0000-4000-8000-000000000000", "//fuzz", 0};
  free(hd_ce_structured(&ev, &meta));
  /* Run the event through whatever the AddHandler inputs registered. */
  hd_results *rs = NULL;
  hd_handler *set = NULL;
  if (hd_registry_get(reg, ev.key, &set) == HD_OK) {
    if (hd_handler_run_sync(set, &ev, &rs) == HD_OK)
      hd_results_free(rs);
    hd_handler_unref(set);
  }
}

static void fuzz_add(hd_arena *a, const uint8_t *data, size_t size) {
  char msg[512];
  Handlers__V1__AddHandlerRequest *req =
      handlers__v1__add_handler_request__unpack(hd_arena_pb_allocator(a), size,
                                                data);
  if (!req)
    return;
  Handlers__V1__AddHandlerReply reply = HANDLERS__V1__ADD_HANDLER_REPLY__INIT;
  if (hd_control_add(ctl, a, req, NULL, &reply, msg, sizeof(msg)) != HD_OK)
    return;
  Handlers__V1__ListHandlersReply list =
      HANDLERS__V1__LIST_HANDLERS_REPLY__INIT;
  hd_control_list(ctl, a, req->key, &list, msg, sizeof(msg));
  /* Keep the registry small: at most a few keys survive an input. */
  if (hd_registry_key_count(reg) > 8 &&
      hd_control_remove(ctl, req->key, reply.handler_id, msg, sizeof(msg)))
    abort(); /* it was just added: removing it must work */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  hd_arena *a = hd_arena_new(1024);
  if (!a)
    return 0;
  if (data[0] & 1)
    fuzz_add(a, data + 1, size - 1);
  else
    fuzz_dispatch(a, data + 1, size - 1);
  hd_arena_free(a);
  return 0;
}
