/*
 * handlerd/error.h - error codes shared by every part of handlerd, and the
 * limits and version that the rest of the API refers to. The smallest
 * public header: a utility that only reports errors includes this one.
 */
#ifndef HANDLERD_ERROR_H
#define HANDLERD_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#define HD_VERSION "0.1.0"

/* Limits checked by hd_event validation (bytes). */
#define HD_KEY_MAX 256
#define HD_EVENT_NAME_MAX 128
#define HD_TOPIC_PATH_MAX 65536    /* the daemon's default limit is lower: */
#define HD_TOPIC_PATH_DEFAULT 1024 /* --max-topic-path-bytes */
#define HD_HANDLER_ID_MAX 32

/* Error codes. Values are stable; HD_ELAST is never returned. */
typedef enum hd_err {
  HD_OK = 0,
  HD_EINVAL,    /* bad argument: malformed message, bad path, mismatch */
  HD_ENOMEM,    /* out of memory */
  HD_ENOKEY,    /* no handler under the key (the seed's UnknownHandlerError) */
  HD_ENOTFOUND, /* no such handler id / member (the seed's KeyError) */
  HD_EEXIST,    /* already present (duplicate member, taken name) */
  HD_EUNSUPPORTED, /* the operation does not apply to this handler kind */
  HD_EHANDLER,     /* a handler's own failure */
  HD_ETIMEOUT,     /* a deadline passed */
  HD_EIO,          /* I/O or system error */
  HD_EBUSY,        /* too much work in flight */
  HD_ELAST
} hd_err;

/* A static, human-readable description of `err`; never NULL. */
const char *hd_strerror(hd_err err);

#ifdef __cplusplus
}
#endif

#endif
