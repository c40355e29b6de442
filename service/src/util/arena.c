#include "arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct block {
  struct block *next;
  size_t size, used;
  alignas(max_align_t) unsigned char data[];
} block;

struct hd_arena {
  block *head;
  ProtobufCAllocator pb;
};

static block *block_new(size_t size) {
  if (size > SIZE_MAX - sizeof(block))
    return NULL;
  block *b = malloc(sizeof(*b) + size);
  if (b) {
    b->next = NULL;
    b->size = size;
    b->used = 0;
  }
  return b;
}

static void *pb_alloc(void *ud, size_t size) {
  return hd_arena_alloc(ud, size);
}

/* Memory goes back all at once in hd_arena_free. */
static void pb_free(void *ud, void *ptr) {
  (void)ud;
  (void)ptr;
}

hd_arena *hd_arena_new(size_t initial) {
  hd_arena *a = malloc(sizeof(*a));
  if (!a)
    return NULL;
  a->head = block_new(initial ? initial : 1024);
  if (!a->head) {
    free(a);
    return NULL;
  }
  a->pb.alloc = pb_alloc;
  a->pb.free = pb_free;
  a->pb.allocator_data = a;
  return a;
}

void hd_arena_free(hd_arena *a) {
  if (!a)
    return;
  for (block *b = a->head, *next; b; b = next) {
    next = b->next;
    free(b);
  }
  free(a);
}

void hd_arena_wipe(hd_arena *a) {
  if (!a)
    return;
  for (block *b = a->head; b; b = b->next)
    explicit_bzero(b->data, b->used);
}

void *hd_arena_alloc(hd_arena *a, size_t size) {
  const size_t align = alignof(max_align_t);
  if (size > SIZE_MAX / 2) /* rounding up and doubling below must not wrap */
    return NULL;
  size = (size + align - 1) & ~(align - 1);
  if (size == 0)
    size = align;
  block *b = a->head;
  if (b->size - b->used < size) {
    size_t want = b->size * 2;
    if (want < size)
      want = size;
    block *nb = block_new(want);
    if (!nb)
      return NULL;
    nb->next = b;
    a->head = b = nb;
  }
  void *p = b->data + b->used;
  b->used += size;
  return p;
}

void *hd_arena_calloc(hd_arena *a, size_t n, size_t size) {
  if (size && n > SIZE_MAX / size)
    return NULL;
  void *p = hd_arena_alloc(a, n * size);
  if (p)
    memset(p, 0, n * size);
  return p;
}

char *hd_arena_strdup(hd_arena *a, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = hd_arena_alloc(a, n);
  if (p)
    memcpy(p, s, n);
  return p;
}

size_t hd_arena_used(const hd_arena *a) {
  size_t n = 0;
  for (const block *b = a->head; b; b = b->next)
    n += b->used;
  return n;
}

ProtobufCAllocator *hd_arena_pb_allocator(hd_arena *a) {
  return &a->pb;
}
