/*
 * error.c - hd_strerror: one fixed description per hd_err.
 */
#include "handlerd/error.h"

/* Indexed by hd_err; the static assert below keeps it in step with the enum
 * so adding a code without a text fails the build instead of reading past
 * the table. */
static const char *const hd_err_text[] = {
    [HD_OK] = "success",
    [HD_EINVAL] = "invalid argument",
    [HD_ENOMEM] = "out of memory",
    [HD_ENOKEY] = "no handler registered under the key",
    [HD_ENOTFOUND] = "no such handler",
    [HD_EEXIST] = "already exists",
    [HD_EUNSUPPORTED] = "operation not supported by this handler kind",
    [HD_EHANDLER] = "handler failed",
    [HD_ETIMEOUT] = "deadline exceeded",
    [HD_EIO] = "I/O error",
    [HD_EBUSY] = "too much work in flight",
};

_Static_assert(sizeof(hd_err_text) / sizeof(hd_err_text[0]) == HD_ELAST,
               "hd_err_text must have one entry per hd_err");

const char *hd_strerror(hd_err err) {
  /* The enum may be signed or unsigned: compare as unsigned so a negative
   * value from a careless cast lands in the "unknown" branch too. */
  if ((unsigned)err >= (unsigned)HD_ELAST)
    return "unknown error";
  return hd_err_text[err];
}
