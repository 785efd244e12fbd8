// Native fast paths for prometheus_client's update methods (inc, set,
// observe) on our values, falling back to the Python method otherwise.
#pragma once

#include <nanobind/nanobind.h>

#include <string>

#include "gpe/exemplar.hpp"

// Remembers the NativeValue type; call once at module initialisation.
void init_fast_methods(nanobind::handle value_type);

// A method object for a prometheus_client metric class ("counter.inc",
// "gauge.inc", "gauge.dec", "gauge.set", "histogram.observe",
// "summary.observe") that takes the native fast path when it can and calls
// `original` (the Python method) otherwise.
nanobind::object make_fast_method(const std::string& kind, nanobind::handle original);

// An exemplar's labels from a dict of str (prometheus_client's form), for
// every binding that takes an exemplar. TypeError for other types,
// ValueError for labels prometheus_client refuses (more than 128 characters).
gpe::ExemplarLabels exemplar_labels(nanobind::handle labels);
