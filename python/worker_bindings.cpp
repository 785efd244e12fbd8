#include "worker_bindings.hpp"

#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include "gpe/worker_metrics.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

gpe::Value* value_of(nb::handle obj) {
    if (obj.is_none()) return nullptr;
    return nb::cast<gpe::Value*>(obj);
}

// (bounds, [bucket values], sum value) or None.
gpe::HistogramValues histogram_of(nb::handle spec) {
    gpe::HistogramValues h;
    if (spec.is_none()) return h;
    nb::tuple t = nb::cast<nb::tuple>(spec);
    h.bounds = nb::cast<std::vector<double>>(t[0]);
    for (nb::handle v : t[1]) h.buckets.push_back(value_of(v));
    h.sum = value_of(t[2]);
    if (h.bounds.size() != h.buckets.size() || h.sum == nullptr) {
        throw nb::value_error("a histogram needs one bucket value per bound and a sum value");
    }
    return h;
}

// Keeps the Python value objects alive as long as the native object uses them.
struct Recorder {
    gpe::RequestRecorder recorder;
    nb::object keep;
};

struct Sampler {
    std::unique_ptr<gpe::ResourceSampler> sampler;
    nb::object keep;
};

}  // namespace

void bind_worker_metrics(nb::module_& m) {
    nb::class_<Recorder>(m, "RequestRecorder", "Records a request in one native call.")
        .def(
            "__init__",
            [](Recorder* self, nb::list methods, nb::object request_size,
               nb::object response_size) {
                std::vector<gpe::RequestRecorder::Method> table;
                for (nb::handle item : methods) {
                    // (name, [5 request counters], failed counter, duration histogram)
                    nb::tuple t = nb::cast<nb::tuple>(item);
                    gpe::RequestRecorder::Method method;
                    method.name = nb::cast<std::string>(t[0]);
                    nb::list requests = nb::cast<nb::list>(t[1]);
                    if (requests.size() != gpe::RequestRecorder::kStatusClasses) {
                        throw nb::value_error(
                            "one request counter per status class (1xx..5xx) is needed");
                    }
                    for (size_t i = 0; i < requests.size(); ++i)
                        method.requests[i] = value_of(requests[i]);
                    method.failed = value_of(t[2]);
                    method.duration = histogram_of(t[3]);
                    table.push_back(std::move(method));
                }
                new (self)
                    Recorder{gpe::RequestRecorder(std::move(table), histogram_of(request_size),
                                                  histogram_of(response_size)),
                             nb::make_tuple(methods, request_size, response_size)};
            },
            "methods"_a, "request_size"_a, "response_size"_a)
        .def(
            "record",
            [](const Recorder& self, std::string_view method, int status, double duration,
               double request_bytes, double response_bytes, bool failed) {
                self.recorder.record(method, status, duration, request_bytes, response_bytes,
                                     failed);
            },
            "method"_a, "status"_a, "duration"_a, "request_bytes"_a, "response_bytes"_a,
            "failed"_a);

    nb::class_<Sampler>(m, "ResourceSampler",
                        "Refreshes this process's resource gauges on a native thread.")
        .def(
            "__init__",
            [](Sampler* self, nb::object memory, nb::object cpu, nb::object fds, nb::object threads,
               nb::object uptime, double interval) {
                gpe::ResourceValues values{value_of(memory), value_of(cpu), value_of(fds),
                                           value_of(threads), value_of(uptime)};
                new (self) Sampler{std::make_unique<gpe::ResourceSampler>(values, interval),
                                   nb::make_tuple(memory, cpu, fds, threads, uptime)};
            },
            "memory_bytes"_a, "cpu_percent"_a, "open_fds"_a, "threads"_a, "uptime_seconds"_a,
            "interval"_a)
        .def("sample", [](Sampler& self) { self.sampler->sample(); })
        .def(
            "stop", [](Sampler& self) { self.sampler->stop(); },
            nb::call_guard<nb::gil_scoped_release>());
}
