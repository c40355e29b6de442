/*
 * A per-call bump allocator: everything a call decodes and encodes lives in
 * one arena freed when the call ends, so the hot path makes no per-field
 * malloc/free pairs.
 */
#ifndef HD_ARENA_H
#define HD_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct hd_arena hd_arena;

/* New arena whose first block holds `initial` bytes; NULL on ENOMEM. */
hd_arena *hd_arena_new(size_t initial);
/* Frees every block. NULL is fine. */
void hd_arena_free(hd_arena *a);
/* Zeroes every byte handed out so far (for arenas that held secrets), so
 * nothing is left in freed memory. NULL is fine. */
void hd_arena_wipe(hd_arena *a);
/* `size` bytes aligned for any type, valid until hd_arena_free; NULL on ENOMEM.
 */
void *hd_arena_alloc(hd_arena *a, size_t size);
void *hd_arena_calloc(hd_arena *a, size_t n, size_t size);
char *hd_arena_strdup(hd_arena *a, const char *s);
/* Bytes handed out so far (rounded up to the alignment). */
size_t hd_arena_used(const hd_arena *a);
/* A protobuf-c allocator drawing from `a` (free is a no-op). Valid for the
 * arena's lifetime. */
ProtobufCAllocator *hd_arena_pb_allocator(hd_arena *a);

#endif
