/*
 * ndjson.h - handlerctl's NDJSON event input (`handlerctl stream`): one
 * JSON object per line, read from a FILE and parsed into an hc_event (the
 * fields are listed in hcli_cmd_stream's help), and the record of a run's
 * failures (counted, the first ones printed, kept for -o json).
 *
 * A module of its own, apart from the stream call, so that the unit tests
 * (tests/unit/cli/test_cli_stream.c) and tests/fuzz/fuzz_ndjson.c drive
 * exactly the code handlerctl runs, from any FILE.
 */
#ifndef HANDLERCTL_NDJSON_H
#define HANDLERCTL_NDJSON_H

#include "cli.h"

/* At most this many "properties" on one line. */
#define HCLI_NDJSON_MAX_PROPERTIES 64
/* Failures printed one by one; then one "more failures not shown". */
#define HCLI_NDJSON_MAX_PRINTED 20
/* Failures kept in the errors array (-o json); the count goes on. */
#define HCLI_NDJSON_MAX_JSON_ERRORS 1000

/* The failures of one run: lines that are not events, and events the
 * server refused. Zero it, then set the fields that apply. */
typedef struct hcli_ndjson_failures {
  size_t failed;  /* failures recorded */
  size_t printed; /* failures offered to `print_to` so far */
  FILE *print_to; /* where failures are printed (stderr); NULL: nowhere */
  int progress;   /* a progress line is on `print_to`: clear it first */
  /* NULL, or a JSON array (the caller's) that gets one {"line", "code",
   * "message"} per failure, up to HCLI_NDJSON_MAX_JSON_ERRORS. */
  json_t *errors;
} hcli_ndjson_failures;

/*
 * Records one failure of input line `line` (0: not known): counts it,
 * prints "handlerctl: line N: CODE: message" while fewer than
 * HCLI_NDJSON_MAX_PRINTED were, and appends it to `errors`. A message may
 * quote the input, which need not be UTF-8; in the JSON document such bytes
 * become '?' (JSON strings cannot carry them, and dropping the entry would
 * report fewer errors than failures).
 */
void hcli_ndjson_failed(hcli_ndjson_failures *f, size_t line, const char *code,
                        const char *message);

/* Reads events from a FILE. The fields after `bad_lines` are the reader's
 * own. */
typedef struct hcli_ndjson_reader {
  size_t line;      /* number (from 1) of the line last returned */
  size_t bad_lines; /* lines that were not a valid event */

  FILE *in;
  const char *default_key;
  hcli_ndjson_failures *failures;
  char *buf; /* the line (getline's) */
  size_t bufsize;
  json_t *obj;    /* the parsed line, which the event borrows from */
  hcli_pool pool; /* other memory the event borrows (decoded values) */
  hc_property props[HCLI_NDJSON_MAX_PROPERTIES];
} hcli_ndjson_reader;

/* A reader of `in` (not closed by the reader). `default_key` (may be NULL,
 * borrowed) is the key of lines without their own "key"; without it such a
 * line is bad. Bad lines are recorded in `failures` (borrowed). */
void hcli_ndjson_init(hcli_ndjson_reader *rd, FILE *in, const char *default_key,
                      hcli_ndjson_failures *failures);

/*
 * Reads up to the next line that is not blank (only spaces and tabs; the
 * line's LF and CR are stripped) and sets rd->line. Returns:
 *   1  the line is an event: *ev is filled; its strings borrow from the
 *      reader until the next call or hcli_ndjson_free;
 *   0  it is not (invalid JSON, not an object, a bad field): recorded as a
 *      BAD_LINE failure with the reason, and counted in bad_lines;
 *  -1  the input has ended (or cannot be read).
 */
int hcli_ndjson_next(hcli_ndjson_reader *rd, hc_event *ev);

/* Frees what the reader holds (not `in`, not the failures). */
void hcli_ndjson_free(hcli_ndjson_reader *rd);

#endif
