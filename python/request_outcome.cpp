#include "request_outcome.hpp"

#include <nanobind/stl/string.h>

#include <array>
#include <limits>
#include <string>
#include <utility>

#include "plain_type.hpp"

using namespace nb::literals;

void Recorder::record(std::string_view method, int status, double seconds, double request_bytes,
                      double response_bytes, bool failed, const gpe::ExemplarLabels* exemplar) {
    recorder.record(method, status ? status : 500, seconds, request_bytes, response_bytes,
                    failed || status == 0, exemplar);
}

namespace {

// The code points of a str, or the bytes of a bytes object (as latin-1
// decodes them): the status line and Content-Length rules read both alike.
class Text {
  public:
    explicit Text(nb::handle obj) {
        if (!obj.is_valid()) return;
        if (PyUnicode_Check(obj.ptr())) {
            kind_ = PyUnicode_KIND(obj.ptr());
            data_ = PyUnicode_DATA(obj.ptr());
            size_ = PyUnicode_GET_LENGTH(obj.ptr());
        } else if (PyBytes_Check(obj.ptr())) {
            kind_ = PyUnicode_1BYTE_KIND;
            data_ = PyBytes_AS_STRING(obj.ptr());
            size_ = PyBytes_GET_SIZE(obj.ptr());
        }
    }
    bool valid() const { return data_ != nullptr; }
    Py_ssize_t size() const { return size_; }
    Py_UCS4 operator[](Py_ssize_t i) const { return PyUnicode_READ(kind_, data_, i); }
    bool space(Py_ssize_t i) const { return Py_UNICODE_ISSPACE((*this)[i]); }
    bool digit(Py_ssize_t i) const { return (*this)[i] >= '0' && (*this)[i] <= '9'; }

  private:
    int kind_ = 0;
    const void* data_ = nullptr;
    Py_ssize_t size_ = 0;
};

// Digits from `at` as a number (saturating), advancing `at` past them.
double read_digits(const Text& text, Py_ssize_t& at) {
    double number = 0;
    for (; at < text.size() && text.digit(at); ++at) number = number * 10 + (text[at] - '0');
    return number;
}

// Whether `name` (str or bytes) is `lower_name` in any case.
bool same_name(nb::handle name, std::string_view lower_name) {
    const Text text(name);
    if (!text.valid() || text.size() != static_cast<Py_ssize_t>(lower_name.size())) return false;
    for (Py_ssize_t i = 0; i < text.size(); ++i) {
        Py_UCS4 c = text[i];
        if (c >= 'A' && c <= 'Z') c += 'a' - 'A';
        if (c != static_cast<unsigned char>(lower_name[static_cast<size_t>(i)])) return false;
    }
    return true;
}

// Interned once at module initialisation and only read afterwards: the
// environ keys and message fields every request looks up.
struct Names {
    PyObject* content_length = nullptr;  // CONTENT_LENGTH
    PyObject* type = nullptr;
    PyObject* status = nullptr;
    PyObject* body = nullptr;
    PyObject* response_start = nullptr;  // http.response.start
    PyObject* response_body = nullptr;   // http.response.body
    PyObject* method = nullptr;
    PyObject* headers = nullptr;
    // A span's, read at every traced request.
    PyObject* get_span_context = nullptr;
    PyObject* is_valid = nullptr;
    PyObject* trace_id = nullptr;
    PyObject* span_id = nullptr;
};
Names names;

}  // namespace

int status_code(nb::handle status) {
    if (status.is_valid() && PyLong_Check(status.ptr())) {
        int overflow = 0;
        const long code = PyLong_AsLongAndOverflow(status.ptr(), &overflow);
        if (code == -1 && PyErr_Occurred()) PyErr_Clear();
        if (overflow || code < 0 || code > std::numeric_limits<int>::max()) return 0;
        return static_cast<int>(code);
    }
    const Text text(status);
    if (!text.valid()) return 0;
    Py_ssize_t at = 0;
    while (at < text.size() && text.space(at)) ++at;
    const Py_ssize_t first = at;
    const double code = read_digits(text, at);
    // The first word, all digits: "200 OK", "404"; not "OK 200", not "2xx".
    if (at == first || (at < text.size() && !text.space(at))) return 0;
    return code > std::numeric_limits<int>::max() ? 0 : static_cast<int>(code);
}

std::optional<double> content_length(nb::handle value) {
    if (value.is_valid() && PyLong_Check(value.ptr())) {
        const double number = PyLong_AsDouble(value.ptr());
        if (number == -1.0 && PyErr_Occurred()) PyErr_Clear();
        return number >= 0 ? std::optional(number) : std::nullopt;
    }
    const Text text(value);
    if (!text.valid()) return std::nullopt;
    Py_ssize_t at = 0;
    while (at < text.size() && text.space(at)) ++at;
    const Py_ssize_t first = at;
    const double number = read_digits(text, at);
    const Py_ssize_t last = at;
    while (at < text.size() && text.space(at)) ++at;
    if (last == first || at != text.size()) return std::nullopt;
    return number;
}

nb::object find_header(nb::handle headers, std::string_view lower_name) {
    if (headers.is_none() || !headers.is_valid()) return {};
    nb::object items = nb::steal(PySequence_Fast(headers.ptr(), "headers"));
    if (!items.is_valid()) {
        PyErr_Clear();  // not a list of headers: none of them is there
        return {};
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(items.ptr()); ++i) {
        PyObject* pair = PySequence_Fast_GET_ITEM(items.ptr(), i);
        if ((PyTuple_CheckExact(pair) || PyList_CheckExact(pair)) &&
            PySequence_Fast_GET_SIZE(pair) == 2 &&
            same_name(PySequence_Fast_GET_ITEM(pair, 0), lower_name)) {
            return nb::borrow(PySequence_Fast_GET_ITEM(pair, 1));
        }
    }
    return {};
}

double request_bytes(nb::handle environ, nb::handle headers) {
    nb::object length;
    if (environ.is_valid() && PyDict_Check(environ.ptr())) {
        length = nb::borrow(PyDict_GetItemWithError(environ.ptr(), names.content_length));
        if (PyErr_Occurred()) PyErr_Clear();
    }
    if (!length.is_valid()) length = find_header(headers, "content-length");
    return length.is_valid() ? content_length(length).value_or(0.0) : 0.0;
}

void report_unraisable(const char* where) {
    try {
        throw;
    } catch (nb::python_error& e) {
        e.restore();
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
        PyErr_SetString(PyExc_RuntimeError, "an unknown C++ exception");
    }
    PyObject* context = PyUnicode_FromString(where);
    PyErr_WriteUnraisable(context);
    Py_XDECREF(context);
}

CurrentTrace::CurrentTrace(nb::object get_current_span, nb::object span_class,
                           nb::object context_var, nb::object span_key,
                           nb::object span_context_class)
    : get_current_span_(std::move(get_current_span)),
      span_class_(std::move(span_class)),
      context_var_(std::move(context_var)),
      span_key_(std::move(span_key)),
      span_context_class_(std::move(span_context_class)) {
    if (!context_var_.is_none() && !PyContextVar_CheckExact(context_var_.ptr())) {
        throw nb::type_error("context_var must be a contextvars.ContextVar");
    }
    if (!span_context_class_.is_none() &&
        !(PyType_Check(span_context_class_.ptr()) &&
          PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(span_context_class_.ptr()),
                           &PyTuple_Type))) {
        throw nb::type_error("span_context_class must be a subclass of tuple");
    }
}

nb::object CurrentTrace::stored_span() const {
    if (context_var_.is_none() || span_key_.is_none()) return {};
    PyObject* context = nullptr;
    if (PyContextVar_Get(context_var_.ptr(), nullptr, &context) < 0) {
        PyErr_Clear();
        return {};
    }
    const nb::object owned = nb::steal(context);
    if (context == nullptr || !PyDict_Check(context)) return {};
    PyObject* span = PyDict_GetItemWithError(context, span_key_.ptr());
    if (span == nullptr && PyErr_Occurred()) {
        PyErr_Clear();
        return {};
    }
    return span ? nb::borrow(span) : nb::none();
}

namespace {

// The low `bytes` bytes of an int that is >= 0 and fits them, little
// endian; false (no error set) for any other value.
bool unsigned_bytes(PyObject* id, unsigned char* out, size_t bytes) {
#if PY_VERSION_HEX >= 0x030D0000
    const Py_ssize_t needed =
        PyLong_AsNativeBytes(id, out, static_cast<Py_ssize_t>(bytes),
                             Py_ASNATIVEBYTES_LITTLE_ENDIAN | Py_ASNATIVEBYTES_REJECT_NEGATIVE |
                                 Py_ASNATIVEBYTES_UNSIGNED_BUFFER);
    const bool fits = needed >= 0 && static_cast<size_t>(needed) <= bytes;
#else
    const bool fits = _PyLong_AsByteArray(reinterpret_cast<PyLongObject*>(id), out, bytes,
                                          /*little_endian=*/1, /*is_signed=*/0) == 0;
#endif
    if (!fits) PyErr_Clear();
    return fits;
}

// An id as OpenTelemetry's exemplar takes it: format(id, "0{digits}x"),
// in `buffer`. Ints that fit `digits` hex digits are written here (0.05 us,
// where format() takes 0.7); anything else goes to format() itself, into
// `other`.
std::string_view hex_id(nb::handle id, size_t digits, std::array<char, 32>& buffer,
                        std::string& other) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::array<unsigned char, 16> bytes{};
    if (PyLong_CheckExact(id.ptr()) && unsigned_bytes(id.ptr(), bytes.data(), digits / 2)) {
        for (size_t i = 0; i < digits / 2; ++i) {  // the last byte is the most significant
            buffer[digits - 2 - 2 * i] = kDigits[bytes[i] >> 4];
            buffer[digits - 1 - 2 * i] = kDigits[bytes[i] & 15];
        }
        return {buffer.data(), digits};
    }
    const nb::str format(digits == 32 ? "032x" : "016x");
    PyObject* text = PyObject_Format(id.ptr(), format.ptr());
    if (text == nullptr) throw nb::python_error();
    other = nb::cast<std::string>(nb::steal(text));
    return other;
}

}  // namespace

// OpenTelemetry's get_current_span(): a value that is not a Span counts as
// none; the span's context must be valid; ids in lower-case hex, zero-padded.
std::optional<gpe::ExemplarLabels> CurrentTrace::labels_of(nb::handle span) const {
    if (span.is_none()) return std::nullopt;
    // Span is an abstract class: isinstance() walks its registry (0.4 us),
    // so a type once found to be a Span is remembered.
    if (!span_type_.is(nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(span.ptr()))))) {
        const int is_span = PyObject_IsInstance(span.ptr(), span_class_.ptr());
        if (is_span < 0) throw nb::python_error();
        if (!is_span) return std::nullopt;
        span_type_ = nb::borrow(reinterpret_cast<PyObject*>(Py_TYPE(span.ptr())));
    }
    const nb::object context =
        nb::steal(PyObject_CallMethodNoArgs(span.ptr(), names.get_span_context));
    if (!context.is_valid()) throw nb::python_error();
    // OpenTelemetry's SpanContext is a tuple whose properties read its items
    // (tracing.py checks which): three Python calls saved.
    const bool as_tuple =
        span_context_class_.is(nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(context.ptr())))) &&
        PyTuple_GET_SIZE(context.ptr()) > kIsValidItem;
    const auto field = [&context, as_tuple](PyObject* name, Py_ssize_t item) {
        if (as_tuple) return nb::borrow(PyTuple_GET_ITEM(context.ptr(), item));
        PyObject* value = PyObject_GetAttr(context.ptr(), name);
        if (value == nullptr) throw nb::python_error();
        return nb::steal(value);
    };
    const int valid = PyObject_IsTrue(field(names.is_valid, kIsValidItem).ptr());
    if (valid < 0) throw nb::python_error();
    if (!valid) return std::nullopt;
    std::array<char, 32> trace_buffer, span_buffer;
    std::string trace_other, span_other;
    const std::array<gpe::ExemplarLabels::LabelView, 2> labels{{
        {"span_id", hex_id(field(names.span_id, kSpanIdItem), 16, span_buffer, span_other)},
        {"trace_id", hex_id(field(names.trace_id, kTraceIdItem), 32, trace_buffer, trace_other)},
    }};
    return gpe::ExemplarLabels(labels);
}

std::optional<gpe::ExemplarLabels> CurrentTrace::exemplar() const {
    if (get_current_span_.is_none()) return std::nullopt;  // no OpenTelemetry
    try {
        nb::object span = stored_span();
        if (!span.is_valid()) span = get_current_span_();
        return labels_of(span);
    } catch (...) {
        report_unraisable("gunicorn_prometheus_exporter: the trace of a request");
        return std::nullopt;
    }
}

template <typename T>
T& bound(nb::handle obj, const char* what) {
    if (!nb::isinstance<T>(obj)) throw nb::type_error(what);
    return nb::cast<T&>(obj);
}

RecordingTarget::RecordingTarget(nb::handle recorder_object, nb::handle trace_object)
    : recorder(&bound<Recorder>(recorder_object, "recorder must be a _native.RequestRecorder")),
      trace(&bound<CurrentTrace>(trace_object,
                                 "trace must be a _native.CurrentTrace (tracing.native_trace())")),
      owner(nb::make_tuple(recorder_object, trace_object)) {}

Outcome::Outcome(const RecordingTarget& target, nb::handle method, double request_bytes)
    : target_(target), request_bytes_(request_bytes), start_(std::chrono::steady_clock::now()) {
    Py_ssize_t size = 0;
    const char* name = method.is_valid() && PyUnicode_Check(method.ptr())
                           ? PyUnicode_AsUTF8AndSize(method.ptr(), &size)
                           : nullptr;
    if (name == nullptr) PyErr_Clear();
    method_.assign(name ? name : "other", name ? static_cast<size_t>(size) : 5);
    target_.recorder->recorder.start();  // in flight until record()
}

Outcome::~Outcome() {
    if (!done_) record(true);
}

void Outcome::take_exemplar() {
    exemplar_ = target_.trace->exemplar();
    traced_ = true;
}

void Outcome::record(bool failed, int code) {
    if (done_) return;
    done_ = true;
    try {
        if (!traced_) take_exemplar();
        const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start_;
        target_.recorder->record(method_, code ? code : status, seconds.count(), request_bytes_,
                                 sent, failed, exemplar_ ? &*exemplar_ : nullptr);
    } catch (...) {
        report_unraisable("gunicorn_prometheus_exporter: recording a request");
    }
}

namespace {

// The send() an ASGI app gets: notes the status and body sizes on the way
// to the server's send and returns the server's awaitable itself (no
// coroutine of ours in between).
struct RecordingSend {
    Outcome outcome;
    nb::object send;
};

PyObject* send_recorded(PyObject* self, PyObject* args, PyObject* kwargs) {
    PyObject* message = nullptr;
    static const char* keywords[] = {"message", nullptr};
    if (kwargs == nullptr && PyTuple_GET_SIZE(args) == 1) {  // as apps call it
        message = PyTuple_GET_ITEM(args, 0);
    } else if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:send", const_cast<char**>(keywords),
                                            &message)) {
        return nullptr;
    }
    RecordingSend& recording = PlainType<RecordingSend>::of(self);
    if (PyDict_Check(message)) {
        PyObject* type = PyDict_GetItemWithError(message, names.type);
        if (type != nullptr && PyUnicode_Check(type)) {
            if (PyUnicode_Compare(type, names.response_start) == 0) {
                PyObject* status = PyDict_GetItemWithError(message, names.status);
                recording.outcome.status = status ? status_code(status) : 0;
                recording.outcome.take_exemplar();  // sent by the app, inside its spans
            } else if (PyUnicode_Compare(type, names.response_body) == 0) {
                PyObject* body = PyDict_GetItemWithError(message, names.body);
                if (body != nullptr && PyBytes_Check(body)) {
                    recording.outcome.sent += static_cast<double>(PyBytes_GET_SIZE(body));
                }
            }
        }
        if (PyErr_Occurred()) PyErr_Clear();  // an odd message is the server's to refuse
    }
    return PyObject_CallOneArg(recording.send.ptr(), message);
}

PyObject* call_recording_send(PyObject* self, PyObject* args, PyObject* kwargs) {
    return guarded_slot([&] { return send_recorded(self, args, kwargs); });
}

// record(failed): the app returned (or raised).
PyObject* record_send(PyObject* self, PyObject* failed) {
    const int is_failed = PyObject_IsTrue(failed);
    if (is_failed < 0) return nullptr;
    PlainType<RecordingSend>::of(self).outcome.record(is_failed != 0);
    Py_RETURN_NONE;
}

PyMethodDef recording_send_methods[] = {
    {"record", record_send, METH_O,
     "record(failed): the app returned (or raised: failed): the request is recorded now."},
    {nullptr, nullptr, 0, nullptr}};

PyType_Slot recording_send_slots[] = {{Py_tp_call, reinterpret_cast<void*>(call_recording_send)},
                                      {Py_tp_methods, recording_send_methods},
                                      {0, nullptr}};

// target(scope, send): the RecordingSend of one ASGI request.
PyObject* call_recording_target(PyObject* self, PyObject* args, PyObject* kwargs) {
    return guarded_slot([&]() -> PyObject* {
        PyObject *scope = nullptr, *send = nullptr;
        static const char* keywords[] = {"scope", "send", nullptr};
        if (kwargs == nullptr && PyTuple_GET_SIZE(args) == 2) {  // as ASGIRecorder calls it
            scope = PyTuple_GET_ITEM(args, 0);
            send = PyTuple_GET_ITEM(args, 1);
        } else if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:RecordingTarget",
                                                const_cast<char**>(keywords), &scope, &send)) {
            return nullptr;
        }
        const RecordingTarget& target = *nb::inst_ptr<RecordingTarget>(self);
        // Borrowed from the scope, which the server keeps for the request.
        PyObject* method = nullptr;
        PyObject* headers = nullptr;
        if (PyDict_Check(scope)) {
            method = PyDict_GetItemWithError(scope, names.method);
            headers = PyDict_GetItemWithError(scope, names.headers);
            if (PyErr_Occurred()) PyErr_Clear();  // an odd scope: the server's to refuse
        }
        return PlainType<RecordingSend>::make([&] {
                   return RecordingSend{Outcome(target, nb::handle(method),
                                                request_bytes(nb::handle(), nb::handle(headers))),
                                        nb::borrow(send)};
               })
            .release()
            .ptr();
    });
}

PyType_Slot recording_target_slots[] = {
    {Py_tp_call, reinterpret_cast<void*>(call_recording_target)}, {0, nullptr}};

void bind_asgi_send(nb::module_& m) {
    nb::class_<RecordingTarget>(m, "RecordingTarget", nb::type_slots(recording_target_slots),
                                "A recorder and a trace reader, checked once for every request "
                                "recorded with them (an ASGIRecorder's); target(scope, send) is "
                                "the RecordingSend of one request.")
        .def(nb::init<nb::handle, nb::handle>(), "recorder"_a, "trace"_a);

    PlainType<RecordingSend>::create(m, "RecordingSend",
                                     "gunicorn_prometheus_exporter._native.RecordingSend",
                                     "The send() of one ASGI request: records its status, body "
                                     "size and trace on the way to the server's send.",
                                     recording_send_slots);
}

}  // namespace

void bind_request_outcome(nb::module_& m) {
    names.content_length = PyUnicode_InternFromString("CONTENT_LENGTH");
    names.type = PyUnicode_InternFromString("type");
    names.status = PyUnicode_InternFromString("status");
    names.body = PyUnicode_InternFromString("body");
    names.response_start = PyUnicode_InternFromString("http.response.start");
    names.response_body = PyUnicode_InternFromString("http.response.body");
    names.method = PyUnicode_InternFromString("method");
    names.headers = PyUnicode_InternFromString("headers");
    names.get_span_context = PyUnicode_InternFromString("get_span_context");
    names.is_valid = PyUnicode_InternFromString("is_valid");
    names.trace_id = PyUnicode_InternFromString("trace_id");
    names.span_id = PyUnicode_InternFromString("span_id");

    nb::class_<CurrentTrace>(m, "CurrentTrace",
                             "The trace of the calling context as an exemplar (tracing.py).")
        .def(nb::init<nb::object, nb::object, nb::object, nb::object, nb::object>(),
             "get_current_span"_a.none(), "span_class"_a.none(), "context_var"_a.none(),
             "span_key"_a.none(), "span_context_class"_a.none() = nb::none())
        .def(
            "exemplar",
            [](const CurrentTrace& self) -> nb::object {
                const std::optional<gpe::ExemplarLabels> labels = self.exemplar();
                if (!labels) return nb::none();
                nb::dict out;
                for (const auto& [name, value] : gpe::ExemplarLabels::decode(labels->encoded())) {
                    out[nb::str(name.data(), name.size())] = nb::str(value.data(), value.size());
                }
                return out;
            },
            "The exemplar labels of the active span, or None.");

    m.def(
        "status_code", [](nb::handle status) { return status_code(status); }, "status"_a.none(),
        "The status code in an int or a status line (str or bytes, \"200 OK\"); 0 when none.");
    m.def(
        "request_bytes",
        [](nb::handle environ, nb::handle headers) { return request_bytes(environ, headers); },
        "environ"_a.none(), "headers"_a.none(),
        "The request body's size: CONTENT_LENGTH of a WSGI environ (a dict), else the "
        "Content-Length among headers (names str in any case, or bytes); 0 when none.");

    bind_asgi_send(m);
}
