/*
 * handlerd core library: events, results, handlers, the registry.
 *
 * A handler is a small vtable (hd_handler_ops: handle, remove, destroy) plus
 * user data. Handling is asynchronous: handle() receives the event and a
 * completion (hd_done_fn) that it calls exactly once, now (a local function)
 * or later from another thread (a webhook). The kinds shipped here:
 *   - simple:       wraps one hd_function_fn;
 *   - event-stream: routes each event name to its own sub-handler;
 *   - set:          runs all members and aggregates their results in order.
 * The registry maps a key to a set (the seed's HandlersMapping).
 *
 * Thread safety: the registry and the handler kinds may be used from any
 * thread. Handlers are reference counted; a dispatch holds a reference for as
 * long as it runs, so removing a handler never frees it under a running call.
 */
#ifndef HANDLERD_HANDLERD_H
#define HANDLERD_HANDLERD_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "handlerd/error.h"
#include "handlerd/log.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes and limits (handlerd/error.h), the logger (handlerd/log.h). */

/* ---- values and events ------------------------------------------------- */

typedef enum hd_value_type {
  HD_VALUE_NONE = 0, /* no value (Python's None) */
  HD_VALUE_JSON,     /* JSON text in bytes */
  HD_VALUE_STRING,   /* UTF-8 text in bytes */
  HD_VALUE_INT64,
  HD_VALUE_DOUBLE,
  HD_VALUE_BINARY,   /* bytes */
  HD_VALUE_RECORD_V2 /* bytes */
} hd_value_type;

/* A topic value. For JSON/STRING/BINARY/RECORD_V2 the bytes are in
 * `bytes.data`/`bytes.len` (text is NUL-terminated as well). Whether the
 * bytes are owned depends on where the value lives: see each function. */
typedef struct hd_value {
  hd_value_type type;
  union {
    struct {
      const char *data;
      size_t len;
    } bytes;
    int64_t i64;
    double f64;
  } u;
} hd_value;

/* Topic types, numbered as handlers.v1.TopicType. */
typedef enum hd_topic_type {
  HD_TOPIC_UNSPECIFIED = 0,
  HD_TOPIC_JSON = 1,
  HD_TOPIC_STRING = 2,
  HD_TOPIC_INT64 = 3,
  HD_TOPIC_DOUBLE = 4,
  HD_TOPIC_BINARY = 5,
  HD_TOPIC_TIME_SERIES = 6,
  HD_TOPIC_RECORD_V2 = 7
} hd_topic_type;

/* Unsubscribe reasons, numbered as Diffusion (handlers.v1.UnsubscribeReason).
 */
typedef enum hd_unsubscribe_reason {
  HD_UNSUB_REQUESTED = 0,
  HD_UNSUB_CONTROL = 1,
  HD_UNSUB_REMOVAL = 2,
  HD_UNSUB_AUTHORIZATION = 3,
  HD_UNSUB_UNKNOWN = 4,
  HD_UNSUB_BACK_PRESSURE = 5,
  HD_UNSUB_BRANCH_MAPPINGS = 6
} hd_unsubscribe_reason;

/* Which arguments an event carries (the DispatchRequest.args case). */
typedef enum hd_args_kind {
  HD_ARGS_NONE = 0,
  HD_ARGS_SUBSCRIBE,   /* SubHandlerArgs: subscribe, close */
  HD_ARGS_UPDATE,      /* UpdateArgs */
  HD_ARGS_UNSUBSCRIBE, /* UnsubscribeArgs */
  HD_ARGS_ERROR,       /* ErrorArgs */
  HD_ARGS_RESPONSE     /* FilterResponseArgs */
} hd_args_kind;

typedef struct hd_property {
  const char *name;
  const char *value;
} hd_property;

/*
 * One event, as handlers see it. All pointers are borrowed: they stay valid
 * until the handler's completion has been called and no longer. A handler
 * that needs data later copies it (hd_event_copy).
 */
typedef struct hd_event {
  const char *key;  /* the registry key */
  const char *name; /* "subscribe", "update", ..., or a custom name */
  hd_args_kind args_kind;
  struct { /* SUBSCRIBE, UPDATE, UNSUBSCRIBE */
    const char *path;
    hd_value value; /* HD_VALUE_NONE when absent */
    int has_spec;
    hd_topic_type type; /* from the spec */
    size_t n_properties;
    const hd_property *properties;
    hd_value old_value;           /* UPDATE: NONE on the first update */
    hd_unsubscribe_reason reason; /* UNSUBSCRIBE */
  } topic;
  struct { /* ERROR */
    int32_t code;
    const char *description;
  } error;
  struct { /* RESPONSE */
    const char *conversation_id;
    const char *sender_session_id;
    const char *path;
    int32_t expected;
    int32_t received;
    hd_value response;
  } response;
  /* Absolute deadline of the caller, CLOCK_REALTIME nanoseconds; 0: none.
   * Asynchronous handlers finish (with HD_ETIMEOUT) before it passes. */
  int64_t deadline_ns;
  const void *reserved[8]; /* room to grow without breaking plugins */
} hd_event;

/* Checks an event against the contract: key and name present and within the
 * limits, a known name carries the args kind it takes, topic paths are 1 to
 * HD_TOPIC_PATH_MAX bytes, JSON values parse. On HD_EINVAL writes a message
 * naming the problem into `msg` (may be NULL). */
hd_err hd_event_validate(const hd_event *ev, char *msg, size_t msg_size);

/* The args kind a known event name takes, or HD_ARGS_NONE for a custom name
 * (which may carry any args). `*known` is set to 1 for the seed's names. */
hd_args_kind hd_event_expected_args(const char *name, int *known);

/* The topic path the event is about: topic.path for subscribe, update and
 * unsubscribe (and close), response.path for a response; NULL for other
 * args and for an empty path. Borrowed from `ev`. (Topic selectors filter
 * on it; CloudEvents' subject is it.) */
const char *hd_event_topic_path(const hd_event *ev);

/* Deep copy of `ev` in one allocation; free with hd_event_free(). NULL when
 * out of memory. Only the fields of ev->args_kind are copied; the other
 * groups and `reserved` are zeroed in the copy. */
hd_event *hd_event_copy(const hd_event *ev);
void hd_event_free(hd_event *ev);

/* The event's arguments as a proto3-JSON object text (camelCase names, as
 * the proto3 JSON mapping: {"topicPath":..,"topicValue":..}), plus "key" and
 * "event". JSON topic values are embedded as JSON, binary as base64, int64 as
 * a string. Returns a malloc'd NUL-terminated string the caller frees, or
 * NULL when out of memory. The output is one compact line. The scalar fields
 * of the event's args kind are always present (defaults included: "reason":
 * "REQUESTED", "code":0); absent values and specs are omitted. Non-finite
 * doubles are "NaN"/"Infinity"/"-Infinity"; text that is not UTF-8 has its
 * bad bytes replaced by U+FFFD. */
char *hd_event_to_json(const hd_event *ev);

/* ---- results ------------------------------------------------------------ */

/* What one handler produced. Owned by the hd_results list that holds it; its
 * strings and value bytes are owned by the result. */
typedef struct hd_result {
  char handler_id[HD_HANDLER_ID_MAX + 1];
  hd_err err;     /* HD_OK on success */
  int grpc_code;  /* status code reported for a failure (0 on success) */
  char *message;  /* failure message, NULL on success */
  hd_value value; /* returned value; owned */
  int64_t duration_ns;
  int http_status; /* webhooks: last HTTP status, 0 otherwise */
  int attempts;    /* webhooks: attempts made, 0 otherwise */
  int truncated;   /* value was cut to the size limit */
  /* Kind of the handler that produced it ("simple", "webhook", ...); a
   * static string set by hd_handler_handle() when the kind left it NULL. */
  const char *kind;
  /* Async webhooks: 1 when the event was stored for delivery out of band
   * (ok); delivery_id names the delivery. */
  int accepted;
  char delivery_id[37];
} hd_result;

/* Setters for a function's `out` result. They copy their arguments.
 * Return HD_ENOMEM on allocation failure. */
hd_err hd_result_set_json(hd_result *r, const char *json);
hd_err hd_result_set_string(hd_result *r, const char *s);
hd_err hd_result_set_bytes(hd_result *r, hd_value_type type, const void *data,
                           size_t len);
void hd_result_set_int64(hd_result *r, int64_t v);
void hd_result_set_double(hd_result *r, double v);
/* Copies `v` (which may be borrowed from an event) into the result. */
hd_err hd_result_set_value(hd_result *r, const hd_value *v);
/* Marks the result failed with `err` and a formatted message. */
void hd_result_set_error(hd_result *r, hd_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* An ordered list of results. */
typedef struct hd_results hd_results;

/* New empty list; NULL when out of memory. */
hd_results *hd_results_new(void);
/* Frees the list and every result in it. NULL is fine. */
void hd_results_free(hd_results *rs);
size_t hd_results_count(const hd_results *rs);
/* The i-th result; valid until the list is changed or freed. */
hd_result *hd_results_at(const hd_results *rs, size_t i);
/* Appends a zeroed result and returns it (owned by the list); NULL on ENOMEM.
 */
hd_result *hd_results_append(hd_results *rs);
/* Moves every result of `from` to the end of `to`; `from` is left empty. */
hd_err hd_results_take(hd_results *to, hd_results *from);

/* ---- handlers ----------------------------------------------------------- */

typedef struct hd_handler hd_handler;

/* The completion: called exactly once per handle() call that returned HD_OK,
 * from any thread, possibly before handle() returns. Ownership of `results`
 * (never NULL) passes to the callee. */
typedef void hd_done_fn(hd_results *results, void *done_data);

/* A handler kind. Every function gets the handler; hd_handler_user_data()
 * gives the kind's state. */
typedef struct hd_handler_ops {
  const char *kind; /* "simple", "event-stream", "set", "webhook", ... */
  /* Starts handling `ev`. On HD_OK, `done` will be called exactly once; on
   * any other return it is never called. `ev` stays valid until `done`. */
  hd_err (*handle)(hd_handler *h, const hd_event *ev, hd_done_fn *done,
                   void *done_data);
  /* Removes the member/route with id `member_id`. HD_ENOTFOUND when absent,
   * HD_EUNSUPPORTED for kinds without members. May be NULL (unsupported). */
  hd_err (*remove)(hd_handler *h, const char *member_id);
  /* Frees the kind's state (user data). Called once, when the last reference
   * goes. May be NULL. */
  void (*destroy)(hd_handler *h);
} hd_handler_ops;

/* Creates a handler of kind `ops` with `user_data`, holding one reference
 * owned by the caller, and a fresh random id ("h-" + 12 hex digits).
 * `ops` must outlive the handler. On failure `*out` is untouched and
 * ops->destroy is NOT called. */
hd_err hd_handler_new(const hd_handler_ops *ops, void *user_data,
                      hd_handler **out);
/* Reference counting. hd_handler_unref() destroys on the last reference. */
hd_handler *hd_handler_ref(hd_handler *h);
void hd_handler_unref(hd_handler *h);
/* The id; valid for the handler's lifetime. */
const char *hd_handler_id(const hd_handler *h);
/* Replaces the id (e.g. when loading saved registrations). HD_EINVAL when
 * empty or longer than HD_HANDLER_ID_MAX. Not thread-safe: use before the
 * handler is shared. */
hd_err hd_handler_set_id(hd_handler *h, const char *id);
/* Fills `id` with a fresh random handler id ("h-" and 12 hex digits), as
 * hd_handler_new gives. HD_EIO when the system has no randomness. */
hd_err hd_handler_random_id(char id[HD_HANDLER_ID_MAX + 1]);
const char *hd_handler_kind(const hd_handler *h);
void *hd_handler_user_data(const hd_handler *h);
const hd_handler_ops *hd_handler_ops_of(const hd_handler *h);

/* Dispatches through the vtable, timing the call. Same contract as
 * ops->handle. */
hd_err hd_handler_handle(hd_handler *h, const hd_event *ev, hd_done_fn *done,
                         void *done_data);
/* ops->remove, or HD_EUNSUPPORTED. */
hd_err hd_handler_remove(hd_handler *h, const char *member_id);

/* Runs `h` on `ev` and waits for its completion on the calling thread.
 * On HD_OK, `*out` is a results list the caller frees. For tests and tools. */
hd_err hd_handler_run_sync(hd_handler *h, const hd_event *ev, hd_results **out);

/* ---- simple handler ------------------------------------------------------ */

/* An in-process function. Fills `out` (its handler_id is already set) and
 * returns HD_OK, or returns an error (and may set a message with
 * hd_result_set_error). Must be quick: it runs on a gRPC thread. */
typedef hd_err hd_function_fn(const hd_event *ev, void *user_data,
                              hd_result *out);

/* A handler that calls `fn(ev, user_data, out)` for every event and
 * completes with one result. `free_user_data` (may be NULL) is called with
 * `user_data` when the handler is destroyed. On failure nothing is freed. */
hd_err hd_simple_new(hd_function_fn *fn, void *user_data,
                     void (*free_user_data)(void *), hd_handler **out);

/* ---- event-stream handler ---------------------------------------------------
 */

/* A handler that routes each event name to one sub-handler. An event with no
 * route is logged at debug level and completes with no result. */
hd_err hd_stream_new(hd_handler **out);
/* Routes `event_name` to `sub`, taking a new reference on it. Replaces an
 * existing route for the name (dropping its reference). HD_EINVAL when `h` is
 * not an event-stream handler or the name is empty. */
hd_err hd_stream_route(hd_handler *h, const char *event_name, hd_handler *sub);
/* Calls `fn` for each route in name order; the pointers are valid during the
 * call only. */
void hd_stream_foreach(hd_handler *h,
                       void (*fn)(const char *event_name, hd_handler *sub,
                                  void *ud),
                       void *ud);
/* The stream's remove(): takes an event name, removes that route. */

/* ---- handler set ------------------------------------------------------------
 */

/* A set of handlers (no duplicates) invoked together: handle() starts every
 * member, completes when the last member completed, with the members'
 * results concatenated in insertion order. */
hd_err hd_set_new(hd_handler **out);
/* Adds `member` (taking a reference). HD_EEXIST when the same handler or a
 * handler with the same id is already a member. */
hd_err hd_set_add(hd_handler *set, hd_handler *member);
/* Removes the member with id `member_id` (the set's remove()). HD_ENOTFOUND
 * when it is not a member (the seed's KeyError). */
hd_err hd_set_remove(hd_handler *set, const char *member_id);
size_t hd_set_size(hd_handler *set);
/* Calls `fn` for each member in insertion order, on a snapshot. */
void hd_set_foreach(hd_handler *set, void (*fn)(hd_handler *member, void *ud),
                    void *ud);

/* ---- registry
 * ------------------------------------------------------------------ */

/* key -> handler set. Reads (dispatch) do not contend with each other. */
typedef struct hd_registry hd_registry;

hd_err hd_registry_new(hd_registry **out);
/* Frees the registry and drops its references. NULL is fine. */
void hd_registry_free(hd_registry *reg);
/* Adds `h` to the set under `key`, creating the key. Takes a reference.
 * HD_EINVAL: bad key. HD_EEXIST: already there. HD_EBUSY: a limit of
 * hd_registry_set_limits is reached (nothing is added). */
hd_err hd_registry_add(hd_registry *reg, const char *key, hd_handler *h);
/* Caps the number of keys and of handlers under one key; 0: no cap (the
 * default). Existing entries over a new cap stay. */
void hd_registry_set_limits(hd_registry *reg, size_t max_keys,
                            size_t max_per_key);
void hd_registry_limits(hd_registry *reg, size_t *max_keys,
                        size_t *max_per_key);
/* Removes handler `id` from `key`; the key goes when its set is empty.
 * HD_ENOKEY: no such key. HD_ENOTFOUND: no such id under the key. */
hd_err hd_registry_remove(hd_registry *reg, const char *key, const char *id);
/* Looks `key` up and returns a new reference to its set (the caller unrefs),
 * or HD_ENOKEY (the seed's UnknownHandlerError). */
hd_err hd_registry_get(hd_registry *reg, const char *key, hd_handler **out);
/* hd_registry_get + hd_handler_handle + unref when done. HD_ENOKEY when the
 * key is unknown; `done` is then not called. */
hd_err hd_registry_dispatch(hd_registry *reg, const hd_event *ev,
                            hd_done_fn *done, void *done_data);
/* Calls `fn` for every (key, member) in key order then insertion order, on
 * a snapshot; `key` may restrict to one key (NULL: all). HD_ENOKEY when
 * `key` is given and unknown. */
hd_err hd_registry_foreach(hd_registry *reg, const char *key,
                           void (*fn)(const char *key, hd_handler *member,
                                      void *ud),
                           void *ud);
size_t hd_registry_key_count(hd_registry *reg);

/* ---- functions (built-ins and plugins) --------------------------------------
 */

/* A table of named in-process functions that AddHandler can refer to. */
typedef struct hd_functions hd_functions;

/* Per-handler state: `instance_new` (may be NULL) runs when a handler is
 * created from the function and its result becomes that handler's user data
 * (else the registered user_data is used); `instance_free` frees it. */
typedef struct hd_function_def {
  const char *name;
  hd_function_fn *fn;
  void *user_data;
  hd_err (*instance_new)(void *user_data, void **instance);
  void (*instance_free)(void *instance);
} hd_function_def;

hd_err hd_functions_new(hd_functions **out);
/* Frees the table and the built-ins' state (the log file). Handlers made from
 * its functions may share that state: destroy them (free the registry)
 * first. */
void hd_functions_free(hd_functions *fns);
/* Registers a copy of `def` (the name is copied). HD_EINVAL: empty name or
 * NULL fn. HD_EEXIST: name taken. */
hd_err hd_functions_register(hd_functions *fns, const hd_function_def *def);
/* Creates a simple handler calling function `name`. HD_ENOTFOUND when no
 * function has that name. */
hd_err hd_functions_make_handler(hd_functions *fns, const char *name,
                                 hd_handler **out);
/* Calls `fn` with each registered name, in name order, on a copy of the
 * names: `fn` may use the table. */
void hd_functions_foreach(hd_functions *fns,
                          void (*fn)(const char *name, void *ud), void *ud);

/* Registers the built-ins: log, count, last_value, echo. `log_path` is the
 * file `log` appends JSON lines to; NULL means stdout. */
hd_err hd_builtins_register(hd_functions *fns, const char *log_path);

/* ---- plugins
 * ----------------------------------------------------------------- */

/* Loads the shared object at `path` with dlopen and calls its entry point
 * (see handlerd/plugin.h) so it can register functions in `fns`. The plugin
 * stays loaded until hd_plugins_unload_all(). On failure writes a message
 * into `msg`, removes whatever the plugin's init registered and unloads it;
 * HD_EINVAL for a bad object (cannot load, missing entry point, other API
 * version), else the error init returned (HD_EEXIST: a name is taken).
 * Load plugins before serving: a failed init's functions are removed, which
 * is only safe while no handler can have been made from them. */
hd_err hd_plugin_load(hd_functions *fns, const char *path, char *msg,
                      size_t msg_size);
/* Calls every loaded plugin's cleanup and dlcloses it, newest first. Every
 * handler made from a plugin's functions must be gone. */
void hd_plugins_unload_all(void);

#ifdef __cplusplus
}
#endif
#endif
