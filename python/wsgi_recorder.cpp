// The WSGI app's wrapper: records every request with one call of the core,
// as soon as its outcome is known and before its last bytes leave - when
// the app returns a list or tuple (the whole body), when the body it
// announced (Content-Length) is complete, when the body ends or when the app
// raises - so that a worker killed at any moment has counted every response
// a client received in full.
//
// Each request costs the app one call more (its start_response) and, for a
// streamed body only, an iterator of ours. The calls go through type slots
// (tp_call, tp_iternext): no argument conversion, and the end of a body is
// NULL without an exception, as CPython's own iterators do it.
#include "wsgi_recorder.hpp"

#include <utility>

#include "plain_type.hpp"
#include "request_outcome.hpp"

using namespace nb::literals;

namespace {

// Interned once at module initialisation and only read afterwards: the
// environ keys and attribute every request looks up.
struct Names {
    PyObject* request_method = nullptr;  // REQUEST_METHOD
    PyObject* file_wrapper = nullptr;    // wsgi.file_wrapper
    PyObject* close = nullptr;
};
Names names;

struct WSGIRecorder {
    nb::object app;
    RecordingTarget target;
    nb::object on_error;  // None: the server counts a raising app itself
};

// The start_response the app gets: one request's outcome.
struct StartResponse {
    Outcome outcome;
    nb::object start_response;  // the server's
    nb::object headers;         // the response's, as the app gave them

    // The body size the app announced (Content-Length), if any.
    std::optional<double> expected() const {
        const nb::object length = find_header(headers, "content-length");
        return length.is_valid() ? content_length(length) : std::nullopt;
    }
};

// A streamed body: counts its bytes on the way out.
struct RecordedBody {
    nb::object exchange;  // the request's StartResponse
    nb::object body;
    nb::object iterator;  // iter(body), taken at the first next() as a generator would
    std::optional<double> expected;
    bool looked = false;  // for the announced size (start_response may come with the first chunk)
    bool closed = false;

    StartResponse& start() { return PlainType<StartResponse>::of(exchange.ptr()); }
    // Closes the app's body once (WSGI: the server calls close(); we do it
    // when the body ends or fails, as a generator's finally would).
    void close_body() {
        if (closed) return;
        closed = true;
        iterator.reset();
        PyObject* close = PyObject_GetAttr(body.ptr(), names.close);
        if (close == nullptr) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)) PyErr_Clear();
            if (PyErr_Occurred()) throw nb::python_error();
            return;
        }
        PyObject* result = PyObject_CallNoArgs(close);
        Py_DECREF(close);
        if (result == nullptr) throw nb::python_error();
        Py_DECREF(result);
    }
};

// A body chunk's size in bytes; 0 for what has no length (the server's to refuse).
double chunk_length(PyObject* chunk) {
    if (PyBytes_Check(chunk)) return static_cast<double>(PyBytes_GET_SIZE(chunk));
    const Py_ssize_t size = PyObject_Length(chunk);
    if (size < 0) PyErr_Clear();
    return size > 0 ? static_cast<double>(size) : 0.0;
}

double sum_of_lengths(PyObject* sequence) {
    double sent = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(sequence); ++i)
        sent += chunk_length(PySequence_Fast_GET_ITEM(sequence, i));
    return sent;
}

// The app raised: recorded as failed, on_error called, the error goes on.
[[noreturn]] void app_raised(WSGIRecorder& self, StartResponse& start, nb::python_error& error) {
    start.outcome.record(true, 500);
    if (!self.on_error.is_none() && error.matches(PyExc_Exception)) {
        try {
            self.on_error();
        } catch (...) {
            report_unraisable("gunicorn_prometheus_exporter: counting a failed request");
        }
    }
    throw;
}

PyObject* call_recorder(PyObject* self_object, PyObject* args, PyObject* kwargs) {
    return guarded_slot([&]() -> PyObject* {
        PyObject *environ = nullptr, *start_response = nullptr;
        static const char* keywords[] = {"environ", "start_response", nullptr};
        if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:WSGIRecorder",
                                         const_cast<char**>(keywords), &environ, &start_response)) {
            return nullptr;
        }
        WSGIRecorder& self = *nb::inst_ptr<WSGIRecorder>(self_object);
        PyObject* method = nullptr;
        if (PyDict_Check(environ)) {
            method = PyDict_GetItemWithError(environ, names.request_method);
            if (method == nullptr && PyErr_Occurred()) throw nb::python_error();
        }
        nb::object exchange = PlainType<StartResponse>::make([&] {
            return StartResponse{
                Outcome(self.target, nb::handle(method), request_bytes(environ, {})),
                nb::borrow(start_response), nb::object()};
        });
        StartResponse& start = PlainType<StartResponse>::of(exchange.ptr());
        nb::object body;
        try {
            body = self.app(nb::handle(environ), exchange);
        } catch (nb::python_error& error) {
            app_raised(self, start, error);
        }
        if (PyList_CheckExact(body.ptr()) || PyTuple_CheckExact(body.ptr())) {
            // The whole body is here (exactly these types: no close()): recorded now.
            start.outcome.sent = sum_of_lengths(body.ptr());
            start.outcome.record(false);
            return body.release().ptr();
        }
        PyObject* wrapper =
            PyDict_Check(environ) ? PyDict_GetItemWithError(environ, names.file_wrapper) : nullptr;
        if (wrapper != nullptr && PyType_Check(wrapper)) {
            const int is_file = PyObject_IsInstance(body.ptr(), wrapper);
            if (is_file < 0) throw nb::python_error();
            if (is_file) {  // the server sends the file itself (sendfile): known now
                start.outcome.sent = start.expected().value_or(0.0);
                start.outcome.record(false);
                return body.release().ptr();
            }
        }
        if (PyErr_Occurred()) throw nb::python_error();
        return PlainType<RecordedBody>::make([&] {
                   return RecordedBody{std::move(exchange), std::move(body), nb::object(),
                                       std::nullopt};
               })
            .release()
            .ptr();
    });
}

PyObject* call_start_response(PyObject* self_object, PyObject* args, PyObject* kwargs) {
    return guarded_slot([&]() -> PyObject* {
        PyObject *status = nullptr, *headers = nullptr, *exc_info = nullptr;
        static const char* keywords[] = {"status", "headers", "exc_info", nullptr};
        if (kwargs == nullptr && PyTuple_GET_SIZE(args) == 2) {  // as apps call it
            status = PyTuple_GET_ITEM(args, 0);
            headers = PyTuple_GET_ITEM(args, 1);
        } else if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:start_response",
                                                const_cast<char**>(keywords), &status, &headers,
                                                &exc_info)) {
            return nullptr;
        }
        StartResponse& self = PlainType<StartResponse>::of(self_object);
        self.outcome.take_exemplar();  // called by the app, inside its spans
        self.outcome.status = status_code(status);
        self.headers = nb::borrow(headers);
        const int with_exc_info = exc_info ? PyObject_IsTrue(exc_info) : 0;
        if (with_exc_info < 0) return nullptr;
        PyObject* forward[] = {status, headers, exc_info};
        return PyObject_Vectorcall(self.start_response.ptr(), forward, with_exc_info ? 3 : 2,
                                   nullptr);
    });
}

PyObject* next_chunk(PyObject* self_object) {
    return guarded_slot([&]() -> PyObject* {
        RecordedBody& self = PlainType<RecordedBody>::of(self_object);
        if (self.closed) return nullptr;
        Outcome& outcome = self.start().outcome;
        if (!self.iterator.is_valid()) self.iterator = nb::steal(PyObject_GetIter(self.body.ptr()));
        PyObject* chunk = self.iterator.is_valid() ? PyIter_Next(self.iterator.ptr()) : nullptr;
        if (chunk == nullptr) {
            const bool failed = PyErr_Occurred() != nullptr;
            if (failed) {
                nb::python_error error;  // the app's: it goes on after the body is closed
                outcome.record(true);
                try {
                    self.close_body();
                } catch (...) {
                    report_unraisable("gunicorn_prometheus_exporter: closing a failed body");
                }
                error.restore();
                return nullptr;
            }
            outcome.record(false);  // the body ended: the server sends what it has left
            self.close_body();
            return nullptr;
        }
        if (!self.looked && self.start().headers.is_valid()) {
            self.expected = self.start().expected();
            self.looked = true;
        }
        outcome.sent += chunk_length(chunk);
        if (!outcome.done() && self.expected && outcome.sent >= *self.expected) {
            outcome.record(false);  // before the last bytes go out
        }
        return chunk;
    });
}

PyObject* iterate_self(PyObject* self) { return Py_NewRef(self); }

// close(): a request not recorded yet did not end well; the app's body is
// closed once.
PyObject* close_recorded_body(PyObject* self_object, PyObject* /*unused*/) {
    return guarded_slot([&]() -> PyObject* {
        RecordedBody& self = PlainType<RecordedBody>::of(self_object);
        self.start().outcome.record(true);  // no-op when already recorded
        self.close_body();
        Py_RETURN_NONE;
    });
}

// A plain C method (servers call it for every streamed body): no binding
// layer between the server and the close.
PyMethodDef body_methods[] = {
    {"close", close_recorded_body, METH_NOARGS,
     "Closes the app's body; a request not recorded yet did not end well."},
    {nullptr, nullptr, 0, nullptr}};

PyType_Slot recorder_slots[] = {{Py_tp_call, reinterpret_cast<void*>(call_recorder)}, {0, nullptr}};
PyType_Slot start_response_slots[] = {{Py_tp_call, reinterpret_cast<void*>(call_start_response)},
                                      {0, nullptr}};
PyType_Slot body_slots[] = {{Py_tp_iter, reinterpret_cast<void*>(iterate_self)},
                            {Py_tp_iternext, reinterpret_cast<void*>(next_chunk)},
                            {Py_tp_methods, body_methods},
                            {0, nullptr}};

}  // namespace

void bind_wsgi_recorder(nb::module_& m) {
    names.request_method = PyUnicode_InternFromString("REQUEST_METHOD");
    names.file_wrapper = PyUnicode_InternFromString("wsgi.file_wrapper");
    names.close = PyUnicode_InternFromString("close");

    nb::class_<WSGIRecorder>(m, "WSGIRecorder", nb::type_slots(recorder_slots),
                             "A WSGI app that records every request of `app` (see "
                             "middleware.py), when its outcome is known.")
        .def(
            "__init__",
            [](WSGIRecorder* self, nb::object app, nb::handle recorder, nb::handle trace,
               nb::object on_error) {
                new (self) WSGIRecorder{std::move(app), RecordingTarget(recorder, trace),
                                        std::move(on_error)};
            },
            "app"_a, "recorder"_a, "trace"_a, "on_error"_a.none() = nb::none())
        .def_prop_ro("app", [](const WSGIRecorder& self) { return self.app; });

    PlainType<StartResponse>::create(m, "WSGIStartResponse",
                                     "gunicorn_prometheus_exporter._native.WSGIStartResponse",
                                     "The start_response of one request: notes its status, "
                                     "headers and trace, then calls the server's.",
                                     start_response_slots);
    PlainType<RecordedBody>::create(m, "WSGIRecordedBody",
                                    "gunicorn_prometheus_exporter._native.WSGIRecordedBody",
                                    "A streamed response body: counts its bytes and records the "
                                    "request when the announced size is reached or the body "
                                    "ends.",
                                    body_slots);
}
