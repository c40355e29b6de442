/*
 * Internal interface of the function table (functions.c), for the built-ins
 * and the plugin loader.
 */
#ifndef HD_FUNCTIONS_INTERNAL_H
#define HD_FUNCTIONS_INTERNAL_H

#include "handlerd/handlerd.h"

/* hd_functions_register(), and the table takes `def->user_data`: it calls
 * `free_user_data(def->user_data)` (when not NULL) from hd_functions_free()
 * or hd_functions_unregister(). On failure nothing is taken and the caller
 * still owns the user data.
 *
 * Handlers made from the function use that user data (unless it has
 * instance_new), so every such handler must be gone before the table is
 * freed: free the registry first. */
hd_err hd_functions_register_owned(hd_functions *fns,
                                   const hd_function_def *def,
                                   void (*free_user_data)(void *));

/* Removes function `name`, freeing owned user data. HD_ENOTFOUND when
 * absent. Handlers already made from it keep working only as long as its
 * code and user data live: the plugin loader uses this to undo a failed
 * plugin init, before any handler can have been made. */
hd_err hd_functions_unregister(hd_functions *fns, const char *name);

#endif
