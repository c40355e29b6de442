/*
 * The function table: named in-process functions (built-ins, plugins) that
 * AddHandler refers to by name, and the simple handlers made from them.
 *
 * Entries are kept sorted by name in an array: the table is small, written at
 * startup and read when a handler is added, so a binary search is plenty.
 */
#include "handlerd/handlerd.h"

#include "array.h"
#include "errmsg.h"
#include "functions_internal.h"
#include "kinds.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct entry {
  char *name; /* own allocation: stays put when the array moves */
  hd_function_def def;
  void (*free_user_data)(void *);
};

struct hd_functions {
  pthread_mutex_t mu;
  struct entry *v;
  size_t n, cap;
};

hd_err hd_functions_new(hd_functions **out) {
  hd_functions *fns = calloc(1, sizeof *fns);
  if (!fns)
    return HD_ENOMEM;
  pthread_mutex_init(&fns->mu, NULL);
  *out = fns;
  return HD_OK;
}

void hd_functions_free(hd_functions *fns) {
  if (!fns)
    return;
  for (size_t i = 0; i < fns->n; i++) {
    if (fns->v[i].free_user_data)
      fns->v[i].free_user_data(fns->v[i].def.user_data);
    free(fns->v[i].name);
  }
  free(fns->v);
  pthread_mutex_destroy(&fns->mu);
  free(fns);
}

/* Index of `name`, or where it would go; *found tells which. Locked. */
static size_t find(const hd_functions *fns, const char *name, int *found) {
  size_t at;

  *found = hd_array_find(fns->v, fns->n, sizeof(*fns->v),
                         offsetof(struct entry, name), name, &at);
  return at;
}

hd_err hd_functions_register_owned(hd_functions *fns,
                                   const hd_function_def *def,
                                   void (*free_user_data)(void *)) {
  if (!fns || !def || !def->name || !def->name[0] || !def->fn)
    return HD_EINVAL;
  char *name = strdup(def->name);
  if (!name)
    return HD_ENOMEM;

  hd_err err = HD_OK;
  pthread_mutex_lock(&fns->mu);
  int found;
  size_t at = find(fns, name, &found);
  if (found) {
    err = HD_EEXIST;
    goto out;
  }
  err = hd_array_reserve(&fns->v, &fns->cap, fns->n, sizeof(*fns->v), 8);
  if (err != HD_OK)
    goto out;
  hd_array_open(fns->v, fns->n, sizeof(*fns->v), at);
  fns->v[at] = (struct entry){name, *def, free_user_data};
  fns->v[at].def.name = name; /* the caller's string may go away */
  fns->n++;
  name = NULL;
out:
  pthread_mutex_unlock(&fns->mu);
  free(name);
  return err;
}

hd_err hd_functions_register(hd_functions *fns, const hd_function_def *def) {
  return hd_functions_register_owned(fns, def, NULL);
}

hd_err hd_functions_unregister(hd_functions *fns, const char *name) {
  if (!fns || !name)
    return HD_EINVAL;
  pthread_mutex_lock(&fns->mu);
  int found;
  size_t at = find(fns, name, &found);
  if (!found) {
    pthread_mutex_unlock(&fns->mu);
    return HD_ENOTFOUND;
  }
  struct entry e = fns->v[at];
  hd_array_close(fns->v, fns->n, sizeof(*fns->v), at);
  fns->n--;
  pthread_mutex_unlock(&fns->mu);

  /* Outside the lock: user code. */
  if (e.free_user_data)
    e.free_user_data(e.def.user_data);
  free(e.name);
  return HD_OK;
}

hd_err hd_functions_make_handler(hd_functions *fns, const char *name,
                                 hd_handler **out) {
  if (!fns || !name || !out)
    return HD_EINVAL;

  /* Copy the definition and let go of the lock before running user code. */
  pthread_mutex_lock(&fns->mu);
  int found;
  size_t at = find(fns, name, &found);
  hd_function_def def = {0};
  if (found)
    def = fns->v[at].def;
  pthread_mutex_unlock(&fns->mu);
  if (!found)
    return HD_ENOTFOUND;

  if (!def.instance_new)
    return hd_simple_new(def.fn, def.user_data, NULL, out);

  void *instance = NULL;
  hd_err err = def.instance_new(def.user_data, &instance);
  if (err != HD_OK)
    return err;
  /* From here the handler owns the instance: instance_free runs when it is
   * destroyed. */
  err = hd_simple_new(def.fn, instance, def.instance_free, out);
  if (err != HD_OK && def.instance_free)
    def.instance_free(instance);
  return err;
}

void hd_functions_foreach(hd_functions *fns,
                          void (*fn)(const char *name, void *ud), void *ud) {
  if (!fns || !fn)
    return;
  /* Call back on a copy of the names, not under the lock, so that `fn` may
   * use the table. Out of memory, the listing stops short: it has no way to
   * fail. */
  pthread_mutex_lock(&fns->mu);
  size_t n = fns->n;
  char **names = n ? malloc(n * sizeof *names) : NULL;
  if (names) {
    for (size_t i = 0; i < n; i++) {
      names[i] = strdup(fns->v[i].name);
      if (!names[i]) {
        n = i;
        break;
      }
    }
  } else {
    n = 0;
  }
  pthread_mutex_unlock(&fns->mu);

  for (size_t i = 0; i < n; i++) {
    fn(names[i], ud);
    free(names[i]);
  }
  free(names);
}

/* ---- the "local" kind: a target naming a function of the table ---------- */

static hd_err local_check_strings(const hd_target_spec *t, const char *what,
                                  char *msg, size_t msg_size) {
  return hd_kind_check_utf8(what, ".local", t->local, msg, msg_size);
}

static const char *local_detail(const hd_target_spec *t) {
  return t->local;
}

/* `ctx` is the function table (hd_control_new's). */
static hd_err local_build(void *ctx, const hd_kind_site *site,
                          const hd_target_spec *t, hd_handler **out,
                          char **secret_out, char *msg, size_t msg_size) {
  const char *what = site->what;
  (void)secret_out;
  hd_err err = hd_functions_make_handler(ctx, t->local, out);
  if (err == HD_ENOTFOUND)
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "%s: no local function named '%s'", what, t->local);
  return err;
}

const hd_kind hd_kind_local = {
    .kind = HD_TARGET_LOCAL,
    .name = "local",
    .handler_kind = "simple",
    .check_strings = local_check_strings,
    .detail = local_detail,
    .build = local_build,
    .needs_context = 1,
};
