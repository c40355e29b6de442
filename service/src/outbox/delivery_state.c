/*
 * delivery_state.c - the names of the delivery states (journal.h), as the
 * log, the metrics labels and handlerctl say them.
 */
#include "journal.h"

const char *hd_delivery_state_name(int state) {
  switch (state) {
  case HD_DELIVERY_PENDING:
    return "pending";
  case HD_DELIVERY_IN_FLIGHT:
    return "in_flight";
  case HD_DELIVERY_SUCCEEDED:
    return "succeeded";
  case HD_DELIVERY_FAILED:
    return "failed";
  case HD_DELIVERY_DEAD:
    return "dead";
  default:
    return "unknown";
  }
}
