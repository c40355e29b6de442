/*
 * frame.c - a dispatch's frames from its caller's arena (frame.h).
 */
#include "frame.h"

#include <stdlib.h>

static _Thread_local hd_frame_scope *current;
static _Thread_local unsigned long heap_frames;

void hd_frame_begin(hd_frame_scope *s, hd_arena *arena, const hd_event *ev) {
  s->ev = ev;
  s->arena = arena;
  s->outer = current;
  current = s;
}

void hd_frame_end(hd_frame_scope *s) {
  current = s->outer;
}

/* This thread's scope for `ev`, or NULL. Only the innermost scope counts:
 * an outer one belongs to a dispatch this thread left for a nested one, and
 * its event may be gone (its address then compares equal to nothing
 * meaningful). */
static hd_frame_scope *scope_of(const hd_event *ev) {
  hd_frame_scope *s = current;
  return s != NULL && ev != NULL && s->ev == ev ? s : NULL;
}

void hd_frame_follow(hd_frame_scope *s, const hd_event *from,
                     const hd_event *to) {
  hd_frame_scope *outer = scope_of(from);
  hd_frame_begin(s, outer != NULL ? outer->arena : NULL, to);
}

void *hd_frame_alloc(const hd_event *ev, size_t size, unsigned char *heap) {
  hd_frame_scope *s = scope_of(ev);

  if (s != NULL && s->arena != NULL) {
    void *p = hd_arena_alloc(s->arena, size);
    if (p != NULL) {
      *heap = 0;
      return p;
    }
  }
  *heap = 1;
  heap_frames++;
  return malloc(size);
}

unsigned long hd_frame_heap_count(void) {
  return heap_frames;
}

void hd_frame_free(void *frame, unsigned char heap) {
  if (heap)
    free(frame);
}
