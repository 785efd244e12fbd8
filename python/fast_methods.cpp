// Fast paths for prometheus_client's metric methods (Counter.inc, Gauge.inc/
// dec/set, Histogram.observe, Summary.observe) when a metric's values are
// native: one C call instead of prometheus_client's Python method plus a
// call into the value. Anything else - a parent metric without values,
// exemplars, keyword arguments, non-numeric amounts, negative counter
// increments, mostrecent gauges' inc - goes to the original Python method, so
// behaviour and error messages stay prometheus_client's own.
#include "fast_methods.hpp"

// (the std::string caster: without it nb::cast<std::string> here would be
// another instantiation than the other files', an ODR violation)
#include <nanobind/stl/string.h>

#include <string>
#include <utility>
#include <vector>

#include "gpe/clock.hpp"
#include "gpe/exemplar.hpp"
#include "gpe/value_store.hpp"

namespace nb = nanobind;

namespace {

// Set once when the module is initialised and only read afterwards: the
// NativeValue type and interned attribute names, needed by every call.
struct Statics {
    PyTypeObject* value_type = nullptr;
    PyObject* value = nullptr;
    PyObject* sum = nullptr;
    PyObject* count = nullptr;
    PyObject* buckets = nullptr;
    PyObject* upper_bounds = nullptr;
};
Statics statics;

// `original` is the Python method itself: args[0] is the metric.
PyObject* fallback(PyObject* original, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return PyObject_Vectorcall(original, args, static_cast<size_t>(nargs), kwnames);
}

bool as_number(PyObject* obj, double& out) {
    if (PyFloat_CheckExact(obj)) {
        out = PyFloat_AS_DOUBLE(obj);
        return true;
    }
    if (PyLong_CheckExact(obj)) {
        out = PyLong_AsDouble(obj);
        if (out == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return false;
        }
        return true;
    }
    return false;
}

// The native value in attribute `name` of `metric`, or nullptr.
gpe::Value* native_attr(PyObject* metric, PyObject* name) {
    PyObject* obj = PyObject_GetAttr(metric, name);
    if (obj == nullptr) {
        PyErr_Clear();
        return nullptr;
    }
    gpe::Value* value = nullptr;
    if (Py_TYPE(obj) == statics.value_type) value = nb::inst_ptr<gpe::Value>(nb::handle(obj));
    Py_DECREF(obj);  // the metric keeps the value alive
    return value;
}

// Runs `op` on the fast path; native code throwing (e.g. the directory
// vanished) becomes a Python exception instead of escaping.
template <typename Op>
PyObject* guarded(Op&& op) {
    try {
        op();
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* counter_inc(PyObject* original, PyObject* const* args, Py_ssize_t nargs,
                      PyObject* kwnames) {
    double amount = 1.0;
    if (kwnames == nullptr && (nargs == 1 || (nargs == 2 && as_number(args[1], amount))) &&
        amount >= 0) {
        if (gpe::Value* value = native_attr(args[0], statics.value)) {
            return guarded([&] { value->inc(amount); });
        }
    }
    return fallback(original, args, nargs, kwnames);
}

PyObject* gauge_add(PyObject* original, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                    double sign) {
    double amount = 1.0;
    if (kwnames == nullptr && (nargs == 1 || (nargs == 2 && as_number(args[1], amount)))) {
        gpe::Value* value = native_attr(args[0], statics.value);
        if (value != nullptr && !value->most_recent()) {
            return guarded([&] { value->inc(sign * amount); });
        }
    }
    return fallback(original, args, nargs, kwnames);
}

PyObject* gauge_inc(PyObject* original, PyObject* const* args, Py_ssize_t nargs,
                    PyObject* kwnames) {
    return gauge_add(original, args, nargs, kwnames, 1.0);
}

PyObject* gauge_dec(PyObject* original, PyObject* const* args, Py_ssize_t nargs,
                    PyObject* kwnames) {
    return gauge_add(original, args, nargs, kwnames, -1.0);
}

PyObject* gauge_set(PyObject* original, PyObject* const* args, Py_ssize_t nargs,
                    PyObject* kwnames) {
    double number = 0.0;
    if (kwnames == nullptr && nargs == 2 && as_number(args[1], number)) {
        if (gpe::Value* value = native_attr(args[0], statics.value)) {
            return guarded(
                [&] { value->set(number, value->most_recent() ? gpe::unix_time() : 0.0); });
        }
    }
    return fallback(original, args, nargs, kwnames);
}

PyObject* histogram_observe(PyObject* original, PyObject* const* args, Py_ssize_t nargs,
                            PyObject* kwnames) {
    double amount = 0.0;
    if (kwnames == nullptr && nargs == 2 && as_number(args[1], amount)) {
        gpe::Value* sum = native_attr(args[0], statics.sum);
        PyObject* bounds = sum ? PyObject_GetAttr(args[0], statics.upper_bounds) : nullptr;
        PyObject* buckets = bounds ? PyObject_GetAttr(args[0], statics.buckets) : nullptr;
        gpe::Value* bucket = nullptr;
        bool native = buckets != nullptr && PyList_CheckExact(bounds) &&
                      PyList_CheckExact(buckets) &&
                      PyList_GET_SIZE(bounds) == PyList_GET_SIZE(buckets);
        for (Py_ssize_t i = 0; native && i < PyList_GET_SIZE(bounds); ++i) {
            PyObject* bound = PyList_GET_ITEM(bounds, i);
            if (!PyFloat_CheckExact(bound)) {
                native = false;
            } else if (amount <= PyFloat_AS_DOUBLE(bound)) {
                PyObject* item = PyList_GET_ITEM(buckets, i);
                native = Py_TYPE(item) == statics.value_type;
                if (native) bucket = nb::inst_ptr<gpe::Value>(nb::handle(item));
                break;
            }
        }
        Py_XDECREF(bounds);
        Py_XDECREF(buckets);
        if (PyErr_Occurred()) PyErr_Clear();
        if (native) {
            return guarded([&] {
                sum->inc(amount);
                if (bucket) bucket->inc(1.0);
            });
        }
    }
    return fallback(original, args, nargs, kwnames);
}

PyObject* summary_observe(PyObject* original, PyObject* const* args, Py_ssize_t nargs,
                          PyObject* kwnames) {
    double amount = 0.0;
    if (kwnames == nullptr && nargs == 2 && as_number(args[1], amount)) {
        gpe::Value* count = native_attr(args[0], statics.count);
        gpe::Value* sum = count ? native_attr(args[0], statics.sum) : nullptr;
        if (sum != nullptr) {
            return guarded([&] {
                count->inc(1.0);
                sum->inc(amount);
            });
        }
    }
    return fallback(original, args, nargs, kwnames);
}

#define GPE_METHOD(name, fn)                                                   \
    PyMethodDef {                                                              \
        name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fn)), \
            METH_FASTCALL | METH_KEYWORDS, nullptr                             \
    }

// Static storage: CPython keeps pointers to method definitions.
PyMethodDef kMethods[] = {
    GPE_METHOD("inc", counter_inc),
    GPE_METHOD("inc", gauge_inc),
    GPE_METHOD("dec", gauge_dec),
    GPE_METHOD("set", gauge_set),
    GPE_METHOD("observe", histogram_observe),
    GPE_METHOD("observe", summary_observe),
};

// A str's UTF-8, cached in the object (UnicodeEncodeError for a lone
// surrogate, as encoding it would raise).
std::string_view utf8_of(nb::handle text) {
    Py_ssize_t size = 0;
    const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
    if (data == nullptr) throw nb::python_error();
    return {data, static_cast<size_t>(size)};
}

}  // namespace

gpe::ExemplarLabels exemplar_labels(nb::handle labels) {
    if (!nb::isinstance<nb::dict>(labels)) throw nb::type_error("exemplar labels must be a dict");
    // Views into the dict's str objects, which outlive this call.
    std::vector<gpe::ExemplarLabels::LabelView> pairs;
    for (auto [name, value] : nb::borrow<nb::dict>(labels)) {
        if (!nb::isinstance<nb::str>(name) || !nb::isinstance<nb::str>(value)) {
            throw nb::type_error("exemplar label names and values must be strings");
        }
        pairs.emplace_back(utf8_of(name), utf8_of(value));
    }
    return gpe::ExemplarLabels(pairs);  // std::invalid_argument becomes ValueError
}

void init_fast_methods(nb::handle value_type) {
    statics.value_type = reinterpret_cast<PyTypeObject*>(value_type.ptr());
    statics.value = PyUnicode_InternFromString("_value");
    statics.sum = PyUnicode_InternFromString("_sum");
    statics.count = PyUnicode_InternFromString("_count");
    statics.buckets = PyUnicode_InternFromString("_buckets");
    statics.upper_bounds = PyUnicode_InternFromString("_upper_bounds");
}

nb::object make_fast_method(const std::string& kind, nb::handle original) {
    static const std::pair<const char*, PyMethodDef*> kinds[] = {
        {"counter.inc", &kMethods[0]},       {"gauge.inc", &kMethods[1]},
        {"gauge.dec", &kMethods[2]},         {"gauge.set", &kMethods[3]},
        {"histogram.observe", &kMethods[4]}, {"summary.observe", &kMethods[5]},
    };
    for (const auto& [name, def] : kinds) {
        if (kind == name) {
            nb::object function = nb::steal(PyCFunction_New(def, original.ptr()));
            if (!function.is_valid()) throw nb::python_error();
            // An instancemethod binds the metric as the first argument.
            nb::object method = nb::steal(PyInstanceMethod_New(function.ptr()));
            if (!method.is_valid()) throw nb::python_error();
            return method;
        }
    }
    throw nb::value_error(("no fast path for " + kind).c_str());
}
