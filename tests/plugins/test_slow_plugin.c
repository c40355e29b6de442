/*
 * A plugin for the integration tests: `sleep_ms` blocks for the event's
 * int64 topic value in milliseconds, then returns it. It stands for a local
 * function that takes longer than its caller's deadline, which handlerd
 * cannot interrupt.
 */
#include <handlerd/plugin.h>

#include <time.h>

static hd_err sleep_ms(const hd_event *ev, void *user_data, hd_result *out) {
  (void)user_data;
  const hd_value *v = &ev->topic.value;
  if (v->type != HD_VALUE_INT64 || v->u.i64 < 0 || v->u.i64 > 60000) {
    hd_result_set_error(out, HD_EINVAL, "sleep_ms takes 0..60000 (int64)");
    return HD_EINVAL;
  }
  struct timespec ts = {(time_t)(v->u.i64 / 1000),
                        (long)(v->u.i64 % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
  hd_result_set_int64(out, v->u.i64);
  return HD_OK;
}

int hd_plugin_version(void) {
  return HD_PLUGIN_API_VERSION;
}

int hd_plugin_init(hd_plugin *p, void **plugin_data) {
  *plugin_data = NULL;
  return hd_plugin_register_function(p, "sleep_ms", sleep_ms, NULL);
}
