// The Python types of the objects the request path makes at every request
// (a WSGI request's start_response and streamed body, an ASGI request's
// send): a T held in place in a plain CPython heap type, with no nanobind
// layer. nanobind registers every instance it makes in a hash table shared
// by all bound objects, which is cold in a worker between requests; with
// these types the WSGI wrapper's cost fell by about 1 us a request
// (bench_request_path.py: hello world +4.5 -> +3.6 us).
#pragma once

#include <nanobind/nanobind.h>

#include <new>
#include <vector>

namespace nb = nanobind;

// Keeps the Python error set now (if any) across a scope that may call
// Python: a request's object can be dropped while an exception propagates.
class SavedError {
  public:
#if PY_VERSION_HEX >= 0x030C0000
    SavedError() : error_(PyErr_GetRaisedException()) {}
    ~SavedError() { PyErr_SetRaisedException(error_); }

  private:
    PyObject* error_;
#else
    SavedError() { PyErr_Fetch(&type_, &value_, &traceback_); }
    ~SavedError() { PyErr_Restore(type_, value_, traceback_); }

  private:
    PyObject *type_ = nullptr, *value_ = nullptr, *traceback_ = nullptr;
#endif
  public:
    SavedError(const SavedError&) = delete;
    SavedError& operator=(const SavedError&) = delete;
};

template <typename T>
class PlainType {
  public:
    // Makes the type (once, at module initialisation) as `m`.`name`.
    // `qualified_name` ("module.Name") and `doc` must be static strings;
    // `slots` (the calls it answers) end with {0, nullptr}.
    static void create(nb::module_& m, const char* name, const char* qualified_name,
                       const char* doc, const PyType_Slot* slots) {
        std::vector<PyType_Slot> all{{Py_tp_dealloc, reinterpret_cast<void*>(dealloc)},
                                     {Py_tp_doc, const_cast<char*>(doc)}};
        for (; slots->slot != 0; ++slots) all.push_back(*slots);
        all.push_back({0, nullptr});
        PyType_Spec spec{qualified_name, static_cast<int>(sizeof(Instance)), 0,
                         Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, all.data()};
        PyObject* type = PyType_FromSpec(&spec);
        if (type == nullptr) throw nb::python_error();
        type_ = reinterpret_cast<PyTypeObject*>(type);
        m.attr(name) = nb::borrow(type);
    }

    // The T of an instance of this type.
    static T& of(PyObject* self) {
        return *std::launder(reinterpret_cast<T*>(reinterpret_cast<Instance*>(self)->storage));
    }

    // A new instance whose T is made in place by `make` (T need not be
    // movable: an Outcome records once, where it was made).
    template <typename Make>
    static nb::object make(Make&& make) {
        PyObject* self = type_->tp_alloc(type_, 0);
        if (self == nullptr) throw nb::python_error();
        try {
            new (reinterpret_cast<Instance*>(self)->storage) T(make());
        } catch (...) {
            type_->tp_free(self);  // nothing made to destroy
            Py_DECREF(type_);      // tp_alloc's reference of a heap type
            throw;
        }
        return nb::steal(self);
    }

  private:
    struct Instance {
        PyObject_HEAD alignas(T) unsigned char storage[sizeof(T)];
    };

    static void dealloc(PyObject* self) {
        PyTypeObject* type = Py_TYPE(self);
        {
            const SavedError saved;  // T's end may call Python (an Outcome records)
            of(self).~T();
        }
        type->tp_free(self);
        Py_DECREF(type);
    }

    // Made once at module initialisation and only read afterwards; the
    // reference is the process's (the module keeps the type as well).
    static inline PyTypeObject* type_ = nullptr;
};
