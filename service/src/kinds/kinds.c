/*
 * kinds.c - the kind table (kinds.h says how to add a row).
 */
#include "kinds.h"
#include "utf8.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* One row per kind. The order is the order of hd_kinds_names(). */
static const hd_kind *const table[] = {
    &hd_kind_local,
    &hd_kind_webhook,
};
#define N_KINDS (sizeof(table) / sizeof(table[0]))

const hd_kind *hd_kind_of(hd_target_kind kind) {
  for (size_t i = 0; i < N_KINDS; i++) {
    if (table[i]->kind == kind)
      return table[i];
  }
  return NULL;
}

const hd_kind *const *hd_kinds_all(size_t *n) {
  *n = N_KINDS;
  return table;
}

static char names[256];
static pthread_once_t names_once = PTHREAD_ONCE_INIT;

static void names_init(void) {
  size_t len = 0;

  if (N_KINDS == 2) {
    snprintf(names, sizeof(names), "neither %s nor %s", table[0]->name,
             table[1]->name);
    return;
  }
  len = (size_t)snprintf(names, sizeof(names), "none of");
  for (size_t i = 0; i < N_KINDS && len < sizeof(names); i++)
    len += (size_t)snprintf(names + len, sizeof(names) - len, "%s %s",
                            i ? "," : "", table[i]->name);
}

const char *hd_kinds_names(void) {
  pthread_once(&names_once, names_init);
  return names;
}

hd_err hd_kind_check_utf8(const char *what, const char *field, const char *s,
                          char *msg, size_t msg_size) {
  size_t len = strlen(s);
  size_t bad = hd_utf8_valid_prefix(s, len);

  if (bad == len)
    return HD_OK;
  snprintf(msg, msg_size, "%s%s is not valid UTF-8 (at byte %zu)", what, field,
           bad);
  return HD_EINVAL;
}
