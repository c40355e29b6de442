/*
 * log_grpc.h - gRPC core's own log lines through handlerd's logger.
 */
#ifndef HD_LOG_GRPC_H
#define HD_LOG_GRPC_H

/* Makes gRPC core write its log lines with hd_log() ("grpc: <message>
 * (<file>:<line>)"), so they have handlerd's format (one JSON object per
 * line with --log-format json) and its escaping. gRPC severities map to
 * levels: ERROR -> error, INFO -> info, DEBUG -> debug; which of them gRPC
 * produces is still its own choice (GRPC_VERBOSITY, default ERROR), and
 * hd_log's threshold applies on top. Call it once, before grpc_init(). */
void hd_log_capture_grpc(void);

#endif
