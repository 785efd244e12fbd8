// The Python bindings of the worker's request recorder and resource sampler.
#pragma once

#include <nanobind/nanobind.h>

// Binds RequestRecorder and ResourceSampler (gpe/worker_metrics.hpp).
void bind_worker_metrics(nanobind::module_& m);
