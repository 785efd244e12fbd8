#include "worker_bindings.hpp"

#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include <system_error>

#include "fast_methods.hpp"
#include "gpe/process_stats.hpp"
#include "gpe/worker_metrics.hpp"
#include "request_outcome.hpp"

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

struct Sampler {
    std::unique_ptr<gpe::ResourceSampler> sampler;
    nb::object keep;
};

// (name, [5 request counters], failed counter, duration histogram) per method.
std::vector<gpe::RequestRecorder::Method> methods_of(nb::list methods) {
    std::vector<gpe::RequestRecorder::Method> table;
    for (nb::handle item : methods) {
        nb::tuple t = nb::cast<nb::tuple>(item);
        gpe::RequestRecorder::Method method;
        method.name = nb::cast<std::string>(t[0]);
        nb::list requests = nb::cast<nb::list>(t[1]);
        if (requests.size() != gpe::RequestRecorder::kStatusClasses) {
            throw nb::value_error("one request counter per status class (1xx..5xx) is needed");
        }
        for (size_t i = 0; i < requests.size(); ++i) method.requests[i] = value_of(requests[i]);
        method.failed = value_of(t[2]);
        method.duration = histogram_of(t[3]);
        table.push_back(std::move(method));
    }
    return table;
}

// by_code(method_index, status_label) -> value, called with the GIL held
// (record() runs with it) the first time a code is seen; the values it
// returns are kept alive here.
gpe::RequestRecorder::CodeFactory code_factory(nb::object by_code, nb::list keep) {
    if (by_code.is_none()) return nullptr;
    return [by_code, keep](size_t method, const std::string& status) mutable {
        nb::object value = by_code(method, status);
        keep.append(value);
        return value_of(value);
    };
}

void record_request(Recorder& self, std::string_view method, int status, double duration,
                    double request_bytes, double response_bytes, bool failed, nb::handle exemplar) {
    if (exemplar.is_none()) {
        self.record(method, status, duration, request_bytes, response_bytes, failed, nullptr);
        return;
    }
    const gpe::ExemplarLabels labels = exemplar_labels(exemplar);
    self.record(method, status, duration, request_bytes, response_bytes, failed, &labels);
}

void bind_recorder(nb::module_& m) {
    nb::class_<Recorder>(m, "RequestRecorder", "Records a request in one native call.")
        .def(
            "__init__",
            [](Recorder* self, nb::list methods, nb::object request_size, nb::object response_size,
               nb::object in_flight, nb::object busy, nb::object by_code) {
                nb::list made;
                new (self) Recorder{
                    gpe::RequestRecorder(methods_of(methods), histogram_of(request_size),
                                         histogram_of(response_size),
                                         {value_of(in_flight), value_of(busy)},
                                         code_factory(by_code, made)),
                    nb::make_tuple(methods, request_size, response_size, in_flight, busy, made)};
            },
            "methods"_a, "request_size"_a, "response_size"_a, "in_flight"_a = nb::none(),
            "busy"_a = nb::none(), "by_code"_a = nb::none())
        .def(
            "start", [](Recorder& self) { self.recorder.start(); },
            "A request started: in flight until its record().")
        .def("record", &record_request, "method"_a, "status"_a, "duration"_a, "request_bytes"_a,
             "response_bytes"_a, "failed"_a, "exemplar"_a = nb::none(),
             "Ends a request begun with start(); status 0 (none: the app raised before "
             "answering) counts as a failed 500. exemplar: labels (a dict of str, e.g. "
             "tracing.current_exemplar()) for the exemplar of the duration bucket, or None.")
        .def_prop_ro("in_flight", [](const Recorder& self) { return self.recorder.in_flight(); });
}

void bind_sampler(nb::module_& m) {
    nb::class_<Sampler>(m, "ResourceSampler",
                        "Refreshes this process's resource gauges on a native thread.")
        .def(
            "__init__",
            [](Sampler* self, nb::object memory, nb::object cpu, nb::object fds, nb::object threads,
               nb::object uptime, double interval, nb::object cpu_seconds, nb::object start_time) {
                gpe::ResourceValues values{
                    value_of(memory), value_of(cpu),         value_of(fds),       value_of(threads),
                    value_of(uptime), value_of(cpu_seconds), value_of(start_time)};
                new (self) Sampler{
                    std::make_unique<gpe::ResourceSampler>(values, interval),
                    nb::make_tuple(memory, cpu, fds, threads, uptime, cpu_seconds, start_time)};
            },
            "memory_bytes"_a, "cpu_percent"_a, "open_fds"_a, "threads"_a, "uptime_seconds"_a,
            "interval"_a, "cpu_seconds_total"_a = nb::none(), "start_time_seconds"_a = nb::none())
        .def(
            "sample", [](Sampler& self) { self.sampler->sample(); },
            nb::call_guard<nb::gil_scoped_release>())
        .def(
            "stop", [](Sampler& self) { self.sampler->stop(); },
            nb::call_guard<nb::gil_scoped_release>());
}

}  // namespace

void bind_worker_metrics(nb::module_& m) {
    bind_recorder(m);
    bind_sampler(m);
    m.def(
        "listen_backlog",
        [](int fd) {
            try {
                return gpe::listen_backlog(fd);
            } catch (const std::system_error& error) {
                throw nb::value_error(error.what());
            }
        },
        "fd"_a,
        "Connections waiting to be accepted on the listening TCP socket fd (TCP_INFO "
        "tcpi_unacked, as Gunicorn's sock.get_backlog()); ValueError naming the cause.");
}
