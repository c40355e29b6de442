/*
 * Plugin loading (see handlerd/plugin.h for the ABI a plugin implements).
 *
 * A plugin's functions live in its shared object, so the object stays loaded
 * until hd_plugins_unload_all(), which the daemon calls after every handler
 * is gone. Loaded plugins are kept on a list, newest first, so unloading runs
 * in reverse load order: a plugin loaded later may depend on an earlier one.
 */
#include "handlerd/plugin.h"

#include "errmsg.h"
#include "functions_internal.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What init gets as its hd_plugin: the table to register into, and the names
 * registered so far so that a failed init can be undone. Lives on
 * hd_plugin_load()'s stack, hence "valid during init only". */
struct hd_plugin {
  hd_functions *fns;
  char **names;
  size_t n_names;
};

struct loaded {
  struct loaded *next;
  void *dl;
  void (*cleanup)(void *);
  void *data;
};

static pthread_mutex_t loaded_mu = PTHREAD_MUTEX_INITIALIZER;
static struct loaded *loaded; /* newest first */

hd_err hd_plugin_register(hd_plugin *p, const hd_function_def *def) {
  if (!p || !p->fns || !def)
    return HD_EINVAL;
  char **names = realloc(p->names, (p->n_names + 1) * sizeof *names);
  if (!names)
    return HD_ENOMEM;
  p->names = names;
  hd_err err = hd_functions_register(p->fns, def);
  if (err != HD_OK)
    return err;
  if (!(names[p->n_names] = strdup(def->name))) {
    hd_functions_unregister(p->fns, def->name);
    return HD_ENOMEM;
  }
  p->n_names++;
  return HD_OK;
}

hd_err hd_plugin_register_function(hd_plugin *p, const char *name,
                                   hd_function_fn *fn, void *user_data) {
  hd_function_def def = {name, fn, user_data, NULL, NULL};
  return hd_plugin_register(p, &def);
}

/* dlsym, telling a missing symbol from one whose value is NULL. */
static void *symbol(void *dl, const char *name) {
  dlerror();
  void *sym = dlsym(dl, name);
  return dlerror() ? NULL : sym;
}

/* Calls the plugin's init and, when it succeeds, records the plugin as
 * loaded. On failure undoes init's registrations; the caller dlcloses. */
static hd_err run_init(hd_functions *fns, const char *path, void *dl,
                       int (*init)(hd_plugin *, void **),
                       void (*cleanup)(void *), char *msg, size_t msg_size) {
  struct loaded *l = calloc(1, sizeof *l);
  if (!l)
    return hd_errmsg(msg, msg_size, HD_ENOMEM, "out of memory");

  hd_plugin p = {fns, NULL, 0};
  void *data = NULL;
  hd_err err = HD_OK;
  int rc = init(&p, &data);
  if (rc != HD_OK) {
    /* Their code is about to be unloaded. Nothing can have made a handler
     * from them yet as long as plugins are loaded before the server starts,
     * which the daemon does. */
    for (size_t i = 0; i < p.n_names; i++)
      hd_functions_unregister(fns, p.names[i]);
    err = hd_errmsg(
        msg, msg_size, rc > HD_OK && rc < HD_ELAST ? rc : HD_EHANDLER,
        "plugin %s failed to initialise: %s", path, hd_strerror((hd_err)rc));
    free(l);
  } else {
    l->dl = dl;
    l->cleanup = cleanup;
    l->data = data;
    pthread_mutex_lock(&loaded_mu);
    l->next = loaded;
    loaded = l;
    pthread_mutex_unlock(&loaded_mu);
  }
  for (size_t i = 0; i < p.n_names; i++)
    free(p.names[i]);
  free(p.names);
  return err;
}

hd_err hd_plugin_load(hd_functions *fns, const char *path, char *msg,
                      size_t msg_size) {
  if (msg && msg_size > 0)
    msg[0] = '\0';
  if (!fns || !path || !path[0])
    return hd_errmsg(msg, msg_size, HD_EINVAL, "no plugin path");

  /* RTLD_NOW: a missing symbol fails here, not in the middle of a call.
   * RTLD_LOCAL: plugins do not see each other's symbols. */
  void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!dl)
    return hd_errmsg(msg, msg_size, HD_EINVAL, "cannot load plugin %s: %s",
                     path, dlerror());

  hd_err err;
  /* Entry points are read through void * (POSIX guarantees the cast). */
  int (*version)(void) = (int (*)(void))symbol(dl, "hd_plugin_version");
  int (*init)(hd_plugin *, void **) =
      (int (*)(hd_plugin *, void **))symbol(dl, "hd_plugin_init");
  void (*cleanup)(void *) = (void (*)(void *))symbol(dl, "hd_plugin_cleanup");
  if (!version) {
    err = hd_errmsg(msg, msg_size, HD_EINVAL,
                    "plugin %s does not export hd_plugin_version", path);
    goto close;
  }
  int v = version();
  if (v != HD_PLUGIN_API_VERSION) {
    err = hd_errmsg(
        msg, msg_size, HD_EINVAL,
        "plugin %s was built for API version %d, handlerd supports %d", path, v,
        HD_PLUGIN_API_VERSION);
    goto close;
  }
  if (!init) {
    err = hd_errmsg(msg, msg_size, HD_EINVAL,
                    "plugin %s does not export hd_plugin_init", path);
    goto close;
  }

  if ((err = run_init(fns, path, dl, init, cleanup, msg, msg_size)) == HD_OK)
    return HD_OK;
close:
  dlclose(dl);
  return err;
}

void hd_plugins_unload_all(void) {
  pthread_mutex_lock(&loaded_mu);
  struct loaded *l = loaded;
  loaded = NULL;
  pthread_mutex_unlock(&loaded_mu);

  while (l) {
    struct loaded *next = l->next;
    if (l->cleanup)
      l->cleanup(l->data);
    dlclose(l->dl);
    free(l);
    l = next;
  }
}
