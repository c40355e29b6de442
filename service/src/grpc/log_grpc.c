/* gRPC core's own log lines, through handlerd's logger (log_grpc.h). Lives
 * in the gRPC front: the logger below it knows nothing of gRPC. */
#include "log_grpc.h"

#include "handlerd/log.h"

#include <grpc/support/log.h>
#include <string.h>

static void grpc_log_line(gpr_log_func_args *args) {
  hd_log_level level;
  const char *file = args->file != NULL ? args->file : "?";
  const char *base = strrchr(file, '/');

  switch (args->severity) {
  case GPR_LOG_SEVERITY_ERROR:
    level = HD_LOG_ERROR;
    break;
  case GPR_LOG_SEVERITY_INFO:
    level = HD_LOG_INFO;
    break;
  default:
    level = HD_LOG_DEBUG;
    break;
  }
  hd_log(level, "grpc: %s (%s:%d)", args->message != NULL ? args->message : "",
         base ? base + 1 : file, args->line);
}

void hd_log_capture_grpc(void) {
  gpr_set_log_function(grpc_log_line);
}
