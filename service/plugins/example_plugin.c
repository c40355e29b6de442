/*
 * example_plugin.c - a handlerd plugin to copy from.
 *
 * It adds two functions that AddHandler can name as local targets:
 *   double_it  an int64 or double topic value, doubled;
 *   upper      a string topic value, upper-cased (ASCII letters only).
 *
 * Build it as a shared object against handlerd's public headers; the
 * hd_result_* and hd_plugin_* functions it calls are resolved against the
 * running handlerd when it is loaded, so do not link hd_core into it:
 *
 *   cc -shared -fPIC -I/path/to/handlerd/include -o my_plugin.so my_plugin.c
 *   handlerd --plugin ./my_plugin.so
 *
 * A function runs on a gRPC thread, possibly on several at once: it must be
 * quick and must not keep pointers into the event after it returns (copy
 * with hd_event_copy() if it must).
 */
#include <handlerd/plugin.h>

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>

/* Names for messages. */
static const char *type_name(hd_value_type t) {
  switch (t) {
  case HD_VALUE_NONE:
    return "no value";
  case HD_VALUE_JSON:
    return "a JSON value";
  case HD_VALUE_STRING:
    return "a string value";
  case HD_VALUE_INT64:
    return "an int64 value";
  case HD_VALUE_DOUBLE:
    return "a double value";
  case HD_VALUE_BINARY:
    return "a binary value";
  case HD_VALUE_RECORD_V2:
    return "a record-v2 value";
  }
  return "an unknown value";
}

/*
 * A function gets the event, the user_data it was registered with, and the
 * result to fill. It returns HD_OK, or an error code after describing the
 * failure with hd_result_set_error(); the failure goes back to the caller in
 * this handler's result, and other handlers under the key still run.
 *
 * The event's topic value is ev->topic.value. It is HD_VALUE_NONE for events
 * without one (error, response, a subscribe to a topic with no value).
 */
static hd_err double_it(const hd_event *ev, void *user_data, hd_result *out) {
  (void)user_data; /* registered with NULL */
  const hd_value *v = &ev->topic.value;

  switch (v->type) {
  case HD_VALUE_INT64:
    /* Check, rather than let a signed overflow be undefined behaviour. */
    if (v->u.i64 > INT64_MAX / 2 || v->u.i64 < INT64_MIN / 2) {
      hd_result_set_error(out, HD_EINVAL, "double_it: %lld overflows int64",
                          (long long)v->u.i64);
      return HD_EINVAL;
    }
    hd_result_set_int64(out, v->u.i64 * 2);
    return HD_OK;
  case HD_VALUE_DOUBLE:
    hd_result_set_double(out, v->u.f64 * 2);
    return HD_OK;
  default:
    hd_result_set_error(out, HD_EINVAL,
                        "double_it takes an int64 or double value, got %s",
                        type_name(v->type));
    return HD_EINVAL;
  }
}

static hd_err upper(const hd_event *ev, void *user_data, hd_result *out) {
  (void)user_data;
  const hd_value *v = &ev->topic.value;

  if (v->type != HD_VALUE_STRING) {
    hd_result_set_error(out, HD_EINVAL, "upper takes a string value, got %s",
                        type_name(v->type));
    return HD_EINVAL;
  }
  /* The event's bytes are borrowed and read-only: work on a copy. The
   * result setters copy their argument, so the copy is freed here. */
  size_t len = v->u.bytes.len;
  char *s = malloc(len + 1);
  if (!s) {
    hd_result_set_error(out, HD_ENOMEM, "upper: out of memory");
    return HD_ENOMEM;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)v->u.bytes.data[i];
    /* Bytes >= 0x80 belong to multi-byte UTF-8 sequences: leave them. */
    s[i] = c < 0x80 ? (char)toupper(c) : (char)c;
  }
  s[len] = '\0';
  hd_err err = hd_result_set_bytes(out, HD_VALUE_STRING, s, len);
  free(s);
  if (err != HD_OK)
    hd_result_set_error(out, err, "upper: out of memory");
  return err;
}

/* ---- entry points ----------------------------------------------------- */

/* The ABI version this plugin was compiled against. handlerd refuses the
 * plugin when it does not support it, instead of calling into a mismatch. */
int hd_plugin_version(void) {
  return HD_PLUGIN_API_VERSION;
}

/*
 * Called once, at load. Register functions here; `p` is only valid during
 * this call. `*plugin_data` may hold state for cleanup (this plugin has
 * none). Returning an error unloads the plugin: functions already
 * registered are removed again, and cleanup is not called.
 *
 * Registration fails with HD_EEXIST when the name is taken (by a built-in
 * such as "log" or another plugin); passing the error on makes handlerd
 * refuse to start, which is better than running without the function.
 */
int hd_plugin_init(hd_plugin *p, void **plugin_data) {
  hd_err err;

  *plugin_data = NULL;
  if ((err = hd_plugin_register_function(p, "double_it", double_it, NULL)))
    return err;
  if ((err = hd_plugin_register_function(p, "upper", upper, NULL)))
    return err;
  /* Functions with per-handler state use hd_plugin_register() with an
   * hd_function_def whose instance_new/instance_free create and free it. */
  return HD_OK;
}

/*
 * Called once at shutdown, after every handler using this plugin's
 * functions is gone: free what init allocated. Optional.
 */
void hd_plugin_cleanup(void *plugin_data) {
  (void)plugin_data;
}
