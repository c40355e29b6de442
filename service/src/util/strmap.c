/*
 * Chained hash map with a per-map random seed, so that keys chosen by
 * clients (topic paths) cannot be aimed at one bucket across processes.
 */
#include "strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

struct node {
  struct node *next;
  uint64_t hash;
  void *value;
  size_t len;
  unsigned char key[]; /* len bytes */
};

struct hd_strmap {
  struct node **buckets;
  size_t nbuckets; /* a power of two */
  size_t count;
  uint64_t seed;
  void (*free_value)(void *);
};

/* FNV-1a from a seeded basis. */
static uint64_t hash(uint64_t seed, const unsigned char *p, size_t len) {
  uint64_t h = 0xcbf29ce484222325ULL ^ seed;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

hd_strmap *hd_strmap_new(void (*free_value)(void *)) {
  hd_strmap *m = calloc(1, sizeof *m);
  if (!m)
    return NULL;
  m->nbuckets = 16;
  m->buckets = calloc(m->nbuckets, sizeof *m->buckets);
  if (!m->buckets) {
    free(m);
    return NULL;
  }
  /* A failed getrandom leaves seed 0: still a working map. */
  if (getrandom(&m->seed, sizeof m->seed, GRND_NONBLOCK) != sizeof m->seed)
    m->seed = 0;
  m->free_value = free_value;
  return m;
}

void hd_strmap_free(hd_strmap *m) {
  if (!m)
    return;
  for (size_t i = 0; i < m->nbuckets; i++) {
    struct node *n = m->buckets[i];
    while (n) {
      struct node *next = n->next;
      if (m->free_value)
        m->free_value(n->value);
      free(n);
      n = next;
    }
  }
  free(m->buckets);
  free(m);
}

static struct node *lookup(const hd_strmap *m, uint64_t h, const void *key,
                           size_t len) {
  for (struct node *n = m->buckets[h & (m->nbuckets - 1)]; n; n = n->next)
    if (n->hash == h && n->len == len && memcmp(n->key, key, len) == 0)
      return n;
  return NULL;
}

void *hd_strmap_get(const hd_strmap *m, const void *key, size_t len) {
  struct node *n = lookup(m, hash(m->seed, key, len), key, len);
  return n ? n->value : NULL;
}

/* Doubles the buckets at load factor 1. Failing to grow is not an error:
 * the chains just get longer. */
static void grow(hd_strmap *m) {
  if (m->count < m->nbuckets || m->nbuckets > SIZE_MAX / 2 / sizeof(void *))
    return;
  size_t nb = m->nbuckets * 2;
  struct node **b = calloc(nb, sizeof *b);
  if (!b)
    return;
  for (size_t i = 0; i < m->nbuckets; i++) {
    struct node *n = m->buckets[i];
    while (n) {
      struct node *next = n->next;
      n->next = b[n->hash & (nb - 1)];
      b[n->hash & (nb - 1)] = n;
      n = next;
    }
  }
  free(m->buckets);
  m->buckets = b;
  m->nbuckets = nb;
}

hd_err hd_strmap_put(hd_strmap *m, const void *key, size_t len, void *value) {
  uint64_t h = hash(m->seed, key, len);
  struct node *n = lookup(m, h, key, len);
  if (n) {
    if (m->free_value && n->value != value)
      m->free_value(n->value);
    n->value = value;
    return HD_OK;
  }
  if (len > SIZE_MAX - sizeof *n)
    return HD_ENOMEM;
  n = malloc(sizeof *n + len);
  if (!n)
    return HD_ENOMEM;
  n->hash = h;
  n->value = value;
  n->len = len;
  memcpy(n->key, key, len);
  n->next = m->buckets[h & (m->nbuckets - 1)];
  m->buckets[h & (m->nbuckets - 1)] = n;
  m->count++;
  grow(m);
  return HD_OK;
}

size_t hd_strmap_count(const hd_strmap *m) {
  return m->count;
}

void *hd_strmap_take(hd_strmap *m, const void *key, size_t len) {
  uint64_t h = hash(m->seed, key, len);
  struct node **at = &m->buckets[h & (m->nbuckets - 1)];
  for (; *at; at = &(*at)->next) {
    struct node *n = *at;
    if (n->hash == h && n->len == len && memcmp(n->key, key, len) == 0) {
      void *value = n->value;
      *at = n->next;
      free(n);
      m->count--;
      return value;
    }
  }
  return NULL;
}

void hd_strmap_each(const hd_strmap *m, void (*fn)(void *value, void *ud),
                    void *ud) {
  for (size_t i = 0; i < m->nbuckets; i++) {
    for (struct node *n = m->buckets[i], *next; n; n = next) {
      next = n->next;
      fn(n->value, ud);
    }
  }
}
