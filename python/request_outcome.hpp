// A request's outcome, read from what the servers hand us (status lines,
// Content-Length in a WSGI environ or in header lists of str or bytes) and
// recorded with one call of the core: the one place of these rules for every
// way requests are recorded (the WSGI and ASGI wrappers, Gunicorn's hooks).
#pragma once

#include <nanobind/nanobind.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "gpe/exemplar.hpp"
#include "gpe/worker_metrics.hpp"

namespace nb = nanobind;

// The bound RequestRecorder; `keep` holds the Python values it writes to.
struct Recorder {
    gpe::RequestRecorder recorder;
    nb::object keep;

    // Ends a request started with recorder.start(). Status 0 (none: the app
    // raised before answering) is recorded as a failed 500.
    void record(std::string_view method, int status, double seconds, double request_bytes,
                double response_bytes, bool failed, const gpe::ExemplarLabels* exemplar);
};

// The status code in `status`: an int, or a status line such as "200 OK"
// (str or bytes); 0 when there is none.
int status_code(nb::handle status);

// A Content-Length value (str, bytes or int): digits, whitespace around
// them allowed; nullopt for anything else.
std::optional<double> content_length(nb::handle value);

// The value of the first header named `lower_name` (lower case) in
// `headers`, an iterable of (name, value) whose names are str in any case or
// bytes (ASGI); an invalid handle when absent. Borrowed from `headers`.
nb::object find_header(nb::handle headers, std::string_view lower_name);

// The request body's size: CONTENT_LENGTH of a WSGI environ (a dict), else
// the Content-Length among `headers`; 0 when absent or not a number.
double request_bytes(nb::handle environ, nb::handle headers);

// The trace of the calling context as an exemplar, when OpenTelemetry is
// there: {"trace_id": 32 hex digits, "span_id": 16 hex digits} of the active
// span, none when no valid span is active. `get_current_span` and
// `span_class` are OpenTelemetry's (None: it is not installed).
// `context_var` and `span_key` (or None) say where its default runtime
// context keeps the active span: with them a request's span is one context
// variable lookup away instead of a 1.5 us walk through OpenTelemetry's API.
class CurrentTrace {
  public:
    // `span_context_class`: OpenTelemetry's SpanContext when it is a tuple
    // of (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid)
    // (None: read by its attributes).
    CurrentTrace(nb::object get_current_span, nb::object span_class, nb::object context_var,
                 nb::object span_key, nb::object span_context_class);

    // The labels of the active span's exemplar; nullopt when no valid span
    // is active. An error of OpenTelemetry's is reported, not raised.
    std::optional<gpe::ExemplarLabels> exemplar() const;

  private:
    // The active span (None when none is), or an invalid object when the
    // context variable cannot say.
    nb::object stored_span() const;
    std::optional<gpe::ExemplarLabels> labels_of(nb::handle span) const;

    nb::object get_current_span_;
    nb::object span_class_;
    nb::object context_var_;
    nb::object span_key_;
    nb::object span_context_class_;
    static constexpr Py_ssize_t kTraceIdItem = 0, kSpanIdItem = 1, kIsValidItem = 5;
    mutable nb::object span_type_;  // the last type found to be a Span (a cache)
};

// What requests are recorded with, resolved from their Python objects once
// (not at every request), and the object that keeps both alive.
struct RecordingTarget {
    RecordingTarget(nb::handle recorder_object, nb::handle trace_object);

    Recorder* recorder;
    const CurrentTrace* trace;
    nb::object owner;  // (recorder, trace)
};

// One request's outcome, recorded once, as soon as it is known: a request
// in flight from construction until record(); the destructor records one
// that nothing recorded (the server dropped it) as failed.
class Outcome {
  public:
    Outcome(const RecordingTarget& target, nb::handle method, double request_bytes);
    ~Outcome();
    Outcome(const Outcome&) = delete;
    Outcome& operator=(const Outcome&) = delete;

    // Inside the app's context (its spans): the exemplar of the request.
    void take_exemplar();
    // Records the request unless it was already; `status` 0: the one the
    // app answered. A failure of the core is reported, never raised: it
    // must not fail the request.
    void record(bool failed, int status = 0);
    bool done() const { return done_; }

    int status = 0;
    double sent = 0;

  private:
    RecordingTarget target_;
    std::string method_;
    double request_bytes_;
    std::chrono::steady_clock::time_point start_;
    bool done_ = false;
    bool traced_ = false;
    std::optional<gpe::ExemplarLabels> exemplar_;
};

// Runs `body` (which returns a new reference, or nullptr with a Python
// error set, or throws) for a type slot: C++ exceptions become Python errors
// instead of escaping into CPython.
template <typename Body>
PyObject* guarded_slot(Body&& body) {
    try {
        return body();
    } catch (nb::python_error& e) {
        e.restore();
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    }
    return nullptr;
}

// Reports the Python error set now, or the C++ exception being handled, as
// an unraisable exception of `where` (printed, not raised).
void report_unraisable(const char* where);

// Binds CurrentTrace, the outcome rules (status_code, request_bytes) and
// RecordingSend (the ASGI wrapper's send).
void bind_request_outcome(nb::module_& m);
