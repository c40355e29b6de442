/*
 * probe.c - one translation unit that includes HD_PROBE_HEADER, compiled
 * with the include path of one layer's own sources (tests/layers/).
 */
#include HD_PROBE_HEADER

int hd_layer_probe;
