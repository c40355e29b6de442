/*
 * Unit tests: handlerctl's `stream` command (client/cli/cmd_stream.c) in
 * process: the NDJSON reader and the failure records that `-o json` prints.
 *
 * cmd_stream.c is compiled into this file (its functions are static) with
 * hc_stream_send renamed to a stub, and main.c's helpers stubbed, as
 * tests/fuzz/fuzz_ndjson.c does. Built with client/cli/values.c and
 * output.c and linked with hc_client and jansson (tests/CMakeLists.txt):
 * not through the tests/unit/test_*.c glob, which links hd_core only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli.h"

hc_err stub_stream_send(hc_stream *s, const hc_event *ev);
#define hc_stream_send stub_stream_send
#include "../../../client/cli/cmd_stream.c"
#undef hc_stream_send

/* ---- stubs -------------------------------------------------------------- */

static size_t sends; /* events the reader handed to hc_stream_send */

hc_err stub_stream_send(hc_stream *s, const hc_event *ev) {
  (void)s, (void)ev;
  sends++;
  return HC_OK;
}

/* What main.c provides to the subcommands; never reached here. */
int hcli_next_option(hcli *g, const hcli_command *cmd, int argc, char **argv,
                     const struct option *own, const char **arg,
                     int *first_arg) {
  (void)g, (void)cmd, (void)argv, (void)own, (void)arg;
  *first_arg = argc;
  return -1;
}

int hcli_usage_error(const hcli *g, const char *fmt, ...) {
  (void)g, (void)fmt;
  return HCLI_EXIT_USAGE;
}

hc_conn *hcli_connect(const hcli *g, int *exit_code) {
  (void)g;
  *exit_code = HCLI_EXIT_UNREACHABLE;
  return NULL;
}

int hcli_report(const hcli *g, hc_err err, const hc_status *st) {
  (void)g, (void)err, (void)st;
  return HCLI_EXIT_RPC;
}

int hcli_exit_code(hc_err err, const hc_status *st) {
  (void)err, (void)st;
  return HCLI_EXIT_RPC;
}

/* ---- helpers ------------------------------------------------------------ */

/* A run as `handlerctl stream -o json` starts it, printing nothing. */
static void run_init(stream_run *r) {
  memset(r, 0, sizeof(*r));
  r->printed = MAX_PRINTED_ERRORS + 1; /* quiet */
  r->errors = json_array();
  assert_non_null(r->errors);
}

static void run_free(stream_run *r) {
  json_decref(r->errors);
  free(r->lines);
}

/* Runs the reader over `input` (`len` bytes) as stdin, default key "k". */
static void read_input(stream_run *r, const char *input, size_t len) {
  FILE *in = fmemopen((void *)input, len, "r");
  FILE *saved = stdin;

  assert_non_null(in);
  sends = 0;
  stdin = in;
  int ended = send_all(r, "k");
  stdin = saved;
  fclose(in);
  assert_false(ended);
}

/* errors[i] of the run, which must be {"line": line, "code": code,
 * "message": <a string>}; returns the message. */
static const char *error_at(stream_run *r, size_t i, size_t line,
                            const char *code) {
  json_t *e = json_array_get(r->errors, i);
  json_int_t got_line = -1;
  const char *got_code = NULL, *msg = NULL;

  assert_non_null(e);
  assert_int_equal(json_unpack(e, "{s:I, s:s, s:s}", "line", &got_line, "code",
                               &got_code, "message", &msg),
                   0);
  assert_int_equal(got_line, line);
  assert_string_equal(got_code, code);
  return msg;
}

/* ---- tests -------------------------------------------------------------- */

/* Found by fuzz_ndjson (commit 774f64c; the seed is
 * tests/fuzz/seeds/fuzz_ndjson/bad-utf8-in-error-message): a failure whose
 * message quotes bytes that are not UTF-8 was dropped from the JSON errors
 * (json_pack refused the string), so `-o json` reported fewer errors than
 * failures. It is kept, those bytes as '?'. */
static void test_failure_message_not_utf8_is_kept(void **state) {
  stream_run r;

  (void)state;
  run_init(&r);
  line_failed(&r, 7, "BAD_LINE", "near '\xc6\xdd' and \xff\xfe!");
  assert_int_equal(r.failed, 1);
  assert_int_equal(json_array_size(r.errors), 1);
  assert_string_equal(error_at(&r, 0, 7, "BAD_LINE"), "near '?"
                                                      "?' and ?"
                                                      "?!");
  /* Valid UTF-8 is kept as it is. */
  line_failed(&r, 8, "BAD_LINE", "caf\xc3\xa9");
  assert_string_equal(error_at(&r, 1, 8, "BAD_LINE"), "caf\xc3\xa9");
  run_free(&r);
}

/* The fuzzer's input itself, through the reader: one bad line, one error
 * in the JSON document, and the document can be written. */
static void test_the_fuzzer_input_is_one_error(void **state) {
  static const char input[] =
      "{\"event\":\"update\",\"value\":\"\\u0\xc6\x9a\xc6\xdd}";
  stream_run r;

  (void)state;
  run_init(&r);
  read_input(&r, input, sizeof(input) - 1);
  assert_int_equal(sends, 0);
  assert_int_equal(r.failed, 1);
  assert_int_equal(r.bad_lines, 1);
  assert_int_equal(json_array_size(r.errors), r.failed);
  const char *msg = error_at(&r, 0, 1, "BAD_LINE");
  assert_non_null(strstr(msg, "invalid JSON"));
  char *doc = json_dumps(r.errors, 0);
  assert_non_null(doc);
  free(doc);
  run_free(&r);
}

/* Every failure, good and bad lines mixed, has its entry, in order. */
static void test_every_failure_has_its_json_error(void **state) {
  static const char input[] =
      "{\"event\":\"update\",\"topic\":\"a\",\"value\":1}\n"
      "not json \xff\n"
      "\n"
      "{\"event\":\"x\",\"type\":\"nope\"}\n"
      "{\"event\":\"update\",\"topic\":\"\xfe\",\"value\":1}\n"
      "{\"event\":\"close\",\"topic\":\"c\"}\n"
      "{\"event\":\"update\",\"value\":\"\\u0\xc6\x9a\xc6\xdd}\n";
  stream_run r;

  (void)state;
  run_init(&r);
  read_input(&r, input, sizeof(input) - 1);
  assert_int_equal(sends, 2);
  assert_int_equal(r.failed, 4);
  assert_int_equal(json_array_size(r.errors), 4);
  error_at(&r, 0, 2, "BAD_LINE");
  error_at(&r, 1, 4, "BAD_LINE");
  error_at(&r, 2, 5, "BAD_LINE");
  error_at(&r, 3, 7, "BAD_LINE");
  run_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_failure_message_not_utf8_is_kept),
      cmocka_unit_test(test_the_fuzzer_input_is_one_error),
      cmocka_unit_test(test_every_failure_has_its_json_error),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
