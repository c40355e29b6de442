/*
 * handlerd plugin ABI: how a shared object adds its own C functions to a
 * running handlerd (`handlerd --plugin path.so`) without rebuilding it.
 *
 * A plugin exports three symbols with C linkage:
 *
 *   int  hd_plugin_version(void);
 *        Returns HD_PLUGIN_API_VERSION as the plugin was built with. handlerd
 *        refuses a plugin whose version it does not support.
 *   int  hd_plugin_init(hd_plugin *p, void **plugin_data);
 *        Registers functions with hd_plugin_register_function(p, ...). May set
 *        *plugin_data, which is handed back to cleanup. Returns 0 (HD_OK) on
 *        success; any other hd_err aborts the load (cleanup is not called;
 *        the functions it registered are removed again).
 *   void hd_plugin_cleanup(void *plugin_data);   (optional)
 *        Called once at shutdown, after every handler using the plugin's
 *        functions is gone.
 *
 * Functions run on gRPC threads and must be quick and thread-safe; a plugin
 * that needs to block must hand work to its own thread.
 *
 * Example (service/plugins/example_plugin.c):
 *   int hd_plugin_init(hd_plugin *p, void **ud) {
 *     return hd_plugin_register_function(p, "double_it", double_it, NULL);
 *   }
 */
#ifndef HANDLERD_PLUGIN_H
#define HANDLERD_PLUGIN_H

#include "handlerd/handlerd.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HD_PLUGIN_API_VERSION 1

/* Opaque: identifies the plugin being loaded; valid during init only. */
typedef struct hd_plugin hd_plugin;

/* Registers `fn` under `name` (copied). `user_data` is passed to every call
 * and is owned by the plugin (free it in cleanup). Errors: HD_EINVAL (NULL
 * plugin, empty name, NULL fn), HD_EEXIST (name taken, e.g. a built-in),
 * HD_ENOMEM. */
hd_err hd_plugin_register_function(hd_plugin *p, const char *name,
                                   hd_function_fn *fn, void *user_data);

/* Same, with per-handler state (see hd_function_def). */
hd_err hd_plugin_register(hd_plugin *p, const hd_function_def *def);

/* Entry points a plugin defines. */
int hd_plugin_version(void);
int hd_plugin_init(hd_plugin *p, void **plugin_data);
void hd_plugin_cleanup(void *plugin_data);

#ifdef __cplusplus
}
#endif
#endif
