/*
 * registry.c - key -> handler set (the seed's HandlersMapping).
 *
 * A sorted array of keys under a rwlock: dispatch, the hot path, takes the
 * read lock just long enough to find the set and reference it; handling runs
 * unlocked. Writers (add/remove, rare) take the write lock. Lock order is
 * registry, then a set's own mutex; nothing calls back into the registry
 * while holding a set's lock.
 *
 * The sets are the registry's: a set obtained with hd_registry_get() is for
 * handling and listing. Changing its members directly bypasses the
 * "drop the key when empty" rule.
 */
#include "handlerd/handlerd.h"

#include "array.h"
#include "registry_select.h"
#include "handler_forward.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct entry {
  char *key;
  hd_handler *set; /* one reference */
};

struct hd_registry {
  pthread_rwlock_t lock;
  struct entry *entries; /* sorted by key (strcmp) */
  size_t count;
  size_t cap;
  size_t max_keys, max_per_key; /* 0: no cap */
};

/* Binary search. Returns 1 and the index when found, else 0 and the
 * insertion index. Call with the lock held. */
static int find_key(const hd_registry *reg, const char *key, size_t *at) {
  return hd_array_find(reg->entries, reg->count, sizeof(*reg->entries),
                       offsetof(struct entry, key), key, at);
}

static int key_valid(const char *key) {
  return key != NULL && key[0] != '\0' &&
         strnlen(key, HD_KEY_MAX + 1) <= HD_KEY_MAX;
}

hd_err hd_registry_new(hd_registry **out) {
  hd_registry *reg;

  if (out == NULL)
    return HD_EINVAL;
  reg = calloc(1, sizeof(*reg));
  if (reg == NULL)
    return HD_ENOMEM;
  if (pthread_rwlock_init(&reg->lock, NULL) != 0) {
    free(reg);
    return HD_ENOMEM;
  }
  *out = reg;
  return HD_OK;
}

void hd_registry_free(hd_registry *reg) {
  if (reg == NULL)
    return;
  for (size_t i = 0; i < reg->count; i++) {
    free(reg->entries[i].key);
    hd_handler_unref(reg->entries[i].set);
  }
  free(reg->entries);
  pthread_rwlock_destroy(&reg->lock);
  free(reg);
}

/* Inserts `key` -> a new set holding `h`. Call with the write lock held. */
static hd_err insert_key(hd_registry *reg, size_t at, const char *key,
                         hd_handler *h, hd_selector *sel) {
  hd_handler *set;
  char *copy;
  hd_err err;

  if (hd_array_reserve(&reg->entries, &reg->cap, reg->count,
                       sizeof(*reg->entries), 8) != HD_OK)
    return HD_ENOMEM;
  copy = strdup(key);
  if (copy == NULL)
    return HD_ENOMEM;
  err = hd_set_new(&set);
  if (err == HD_OK) {
    err = hd_set_add_selected(set, h, sel);
    if (err != HD_OK)
      hd_handler_unref(set);
  }
  if (err != HD_OK) {
    free(copy);
    return err;
  }
  hd_array_open(reg->entries, reg->count, sizeof(*reg->entries), at);
  reg->entries[at].key = copy;
  reg->entries[at].set = set;
  reg->count++;
  return HD_OK;
}

hd_err hd_registry_add(hd_registry *reg, const char *key, hd_handler *h) {
  return hd_registry_add_selected(reg, key, h, NULL);
}

hd_err hd_registry_replace(hd_registry *reg, const char *key, const char *id,
                           hd_handler *h, hd_selector *sel) {
  size_t at;
  hd_err err;

  if (reg == NULL || key == NULL || id == NULL || h == NULL)
    return HD_EINVAL;
  /* Read-locked: the set has its own lock, and the key cannot go away
   * while we hold this one. */
  pthread_rwlock_rdlock(&reg->lock);
  err = find_key(reg, key, &at)
            ? hd_set_replace(reg->entries[at].set, id, h, sel)
            : HD_ENOKEY;
  pthread_rwlock_unlock(&reg->lock);
  return err;
}

hd_err hd_registry_add_selected(hd_registry *reg, const char *key,
                                hd_handler *h, hd_selector *sel) {
  size_t at;
  hd_err err;

  if (reg == NULL || h == NULL || !key_valid(key))
    return HD_EINVAL;
  pthread_rwlock_wrlock(&reg->lock);
  if (find_key(reg, key, &at))
    err = reg->max_per_key &&
                  hd_set_size(reg->entries[at].set) >= reg->max_per_key
              ? HD_EBUSY
              : hd_set_add_selected(reg->entries[at].set, h, sel);
  else
    err = reg->max_keys && reg->count >= reg->max_keys
              ? HD_EBUSY
              : insert_key(reg, at, key, h, sel);
  pthread_rwlock_unlock(&reg->lock);
  return err;
}

void hd_registry_set_limits(hd_registry *reg, size_t max_keys,
                            size_t max_per_key) {
  pthread_rwlock_wrlock(&reg->lock);
  reg->max_keys = max_keys;
  reg->max_per_key = max_per_key;
  pthread_rwlock_unlock(&reg->lock);
}

void hd_registry_limits(hd_registry *reg, size_t *max_keys,
                        size_t *max_per_key) {
  pthread_rwlock_rdlock(&reg->lock);
  *max_keys = reg->max_keys;
  *max_per_key = reg->max_per_key;
  pthread_rwlock_unlock(&reg->lock);
}

/* hd_set_foreach callback: picks the member to remove, with a reference, so
 * its last unref (and destroy) can run after the write lock is released. */
struct pick {
  const char *id;
  hd_handler *found;
};

static void pick_member(hd_handler *member, void *ud) {
  struct pick *p = ud;

  if (p->found == NULL && strcmp(hd_handler_id(member), p->id) == 0)
    p->found = hd_handler_ref(member);
}

hd_err hd_registry_remove(hd_registry *reg, const char *key, const char *id) {
  struct pick pick = {.id = id, .found = NULL};
  hd_handler *dropped_set = NULL;
  size_t at;
  hd_err err;

  if (reg == NULL || key == NULL || id == NULL)
    return HD_EINVAL;
  pthread_rwlock_wrlock(&reg->lock);
  if (!find_key(reg, key, &at)) {
    pthread_rwlock_unlock(&reg->lock);
    return HD_ENOKEY;
  }
  hd_set_foreach(reg->entries[at].set, pick_member, &pick);
  err = hd_set_remove(reg->entries[at].set, id);
  if (err == HD_OK && hd_set_size(reg->entries[at].set) == 0) {
    /* An empty key would still answer dispatch with no results; the seed
     * forgets it instead, so later dispatches get HD_ENOKEY. */
    dropped_set = reg->entries[at].set;
    free(reg->entries[at].key);
    hd_array_close(reg->entries, reg->count, sizeof(*reg->entries), at);
    reg->count--;
  }
  pthread_rwlock_unlock(&reg->lock);
  hd_handler_unref(dropped_set);
  hd_handler_unref(pick.found);
  return err;
}

hd_err hd_registry_get(hd_registry *reg, const char *key, hd_handler **out) {
  size_t at;
  hd_err err = HD_ENOKEY;

  if (reg == NULL || key == NULL || out == NULL)
    return HD_EINVAL;
  pthread_rwlock_rdlock(&reg->lock);
  if (find_key(reg, key, &at)) {
    *out = hd_handler_ref(reg->entries[at].set);
    err = HD_OK;
  }
  pthread_rwlock_unlock(&reg->lock);
  return err;
}

/* ---- dispatch ------------------------------------------------------------ */

hd_err hd_registry_dispatch(hd_registry *reg, const hd_event *ev,
                            hd_done_fn *done, void *done_data) {
  hd_handler *set;
  hd_err err;

  if (reg == NULL || ev == NULL || done == NULL)
    return HD_EINVAL;
  if (ev->key == NULL)
    return HD_ENOKEY;
  err = hd_registry_get(reg, ev->key, &set);
  if (err != HD_OK)
    return err;
  /* Forwarding drops the reference before completing: when the caller hears
   * "done", a removed handler is already gone. */
  return hd_handler_forward(set, ev, done, done_data);
}

/* ---- listing --------------------------------------------------------------
 */

struct listing {
  char **keys; /* copies, one per listed key */
  size_t n_keys;
  struct item {
    size_t key; /* index into keys */
    hd_handler *member;
  } * items;
  size_t count;
  size_t cap;
  int failed;
};

static void list_member(hd_handler *member, void *ud) {
  struct listing *l = ud;

  if (l->failed)
    return;
  if (hd_array_reserve(&l->items, &l->cap, l->count, sizeof(*l->items), 16) !=
      HD_OK) {
    l->failed = 1;
    return;
  }
  l->items[l->count].key = l->n_keys - 1;
  l->items[l->count].member = hd_handler_ref(member);
  l->count++;
}

/* Copies entry `e`'s key and members into `l`. Read lock held. */
static void list_entry(struct listing *l, const struct entry *e) {
  if (l->failed)
    return;
  l->keys[l->n_keys] = strdup(e->key);
  if (l->keys[l->n_keys] == NULL) {
    l->failed = 1;
    return;
  }
  l->n_keys++;
  hd_set_foreach(e->set, list_member, l);
}

hd_err hd_registry_foreach(hd_registry *reg, const char *key,
                           void (*fn)(const char *key, hd_handler *member,
                                      void *ud),
                           void *ud) {
  struct listing l = {0};
  hd_err err = HD_OK;
  size_t at;

  if (reg == NULL || fn == NULL)
    return HD_EINVAL;
  /* Snapshot under the read lock, call `fn` unlocked: it may add or remove
   * (which takes the write lock) or be slow. */
  pthread_rwlock_rdlock(&reg->lock);
  if (key != NULL) {
    if (!find_key(reg, key, &at)) {
      err = HD_ENOKEY;
    } else if ((l.keys = malloc(sizeof(char *))) == NULL) {
      err = HD_ENOMEM;
    } else {
      list_entry(&l, &reg->entries[at]);
    }
  } else if (reg->count > 0) {
    l.keys = malloc(reg->count * sizeof(char *));
    if (l.keys == NULL)
      err = HD_ENOMEM;
    for (size_t i = 0; l.keys != NULL && i < reg->count; i++)
      list_entry(&l, &reg->entries[i]);
  }
  pthread_rwlock_unlock(&reg->lock);

  if (err == HD_OK && l.failed)
    err = HD_ENOMEM;
  if (err == HD_OK) {
    for (size_t i = 0; i < l.count; i++)
      fn(l.keys[l.items[i].key], l.items[i].member, ud);
  }
  for (size_t i = 0; i < l.count; i++)
    hd_handler_unref(l.items[i].member);
  for (size_t i = 0; i < l.n_keys; i++)
    free(l.keys[i]);
  free(l.items);
  free(l.keys);
  return err;
}

size_t hd_registry_key_count(hd_registry *reg) {
  size_t n;

  if (reg == NULL)
    return 0;
  pthread_rwlock_rdlock(&reg->lock);
  n = reg->count;
  pthread_rwlock_unlock(&reg->lock);
  return n;
}
