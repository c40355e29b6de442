/*
 * webhook_body.c - a webhook request body: immutable, reference counted,
 * shared by the jobs of one event's fan-out (webhook_engine.h).
 */
#include "webhook_engine.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- bodies ------------------------------------------------------------- */

struct hd_webhook_body {
  atomic_uint refs;
  size_t len;
  char *text;
};

hd_webhook_body *hd_webhook_body_take(char *text) {
  hd_webhook_body *b;

  if (text == NULL)
    return NULL;
  b = malloc(sizeof(*b));
  if (b == NULL) {
    free(text);
    return NULL;
  }
  atomic_init(&b->refs, 1);
  b->len = strlen(text);
  b->text = text;
  return b;
}

hd_webhook_body *hd_webhook_body_ref(hd_webhook_body *b) {
  /* relaxed: the caller already holds a reference. */
  atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
  return b;
}

void hd_webhook_body_unref(hd_webhook_body *b) {
  if (b == NULL)
    return;
  /* acq_rel: the thread that frees sees every use by the others. */
  if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
    return;
  free(b->text);
  free(b);
}

const char *hd_webhook_body_text(const hd_webhook_body *b) {
  return b->text;
}

size_t hd_webhook_body_len(const hd_webhook_body *b) {
  return b->len;
}
