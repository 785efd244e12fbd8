// gunicorn_prometheus_exporter._native: thin nanobind bindings of the core.
// No logic lives here; see core/include/gpe for what each call does.
#include <nanobind/nanobind.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "convert.hpp"
#include "fast_methods.hpp"
#include "gpe/archive.hpp"
#include "gpe/exemplar.hpp"
#include "gpe/exposition.hpp"
#include "gpe/multiprocess.hpp"
#include "gpe/series_key.hpp"
#include "gpe/value_store.hpp"
#include "redis_bindings.hpp"
#include "request_outcome.hpp"
#include "settings_bindings.hpp"
#include "worker_bindings.hpp"
#include "wsgi_recorder.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// Label values as prometheus_client passes them (str already, but be lenient
// like its json.dumps would not be: anything else is a clear TypeError).
std::vector<std::string> to_strings(nb::handle sequence, const char* what) {
    std::vector<std::string> out;
    for (nb::handle item : sequence) {
        if (!nb::isinstance<nb::str>(item)) {
            throw nb::type_error((std::string(what) + " must be strings").c_str());
        }
        out.emplace_back(nb::cast<std::string>(item));
    }
    return out;
}

// prometheus_client's compatibility with the old lower-case variable, done
// where its value class and its collector do it: copied to
// PROMETHEUS_MULTIPROC_DIR, with a DeprecationWarning.
void copy_deprecated_directory_variable() {
    if (std::getenv("prometheus_multiproc_dir") == nullptr ||
        std::getenv("PROMETHEUS_MULTIPROC_DIR") != nullptr) {
        return;
    }
    nb::object environ = nb::module_::import_("os").attr("environ");
    environ["PROMETHEUS_MULTIPROC_DIR"] = environ["prometheus_multiproc_dir"];
    if (PyErr_WarnEx(PyExc_DeprecationWarning,
                     "prometheus_multiproc_dir variable has been deprecated in favor of the upper "
                     "case naming PROMETHEUS_MULTIPROC_DIR",
                     1) < 0) {
        throw nb::python_error();
    }
}

// prometheus_client's value method: `exemplar` is its Exemplar namedtuple.
void set_exemplar(gpe::Value& self, nb::handle exemplar) {
    const gpe::ExemplarLabels labels = exemplar_labels(exemplar.attr("labels"));
    const nb::object timestamp = exemplar.attr("timestamp");
    self.set_exemplar(labels, nb::cast<double>(exemplar.attr("value")),
                      timestamp.is_none() ? std::nan("") : nb::cast<double>(timestamp));
}

nb::object get_exemplar(gpe::Value& self) {
    const std::optional<gpe::ExemplarValue> exemplar = self.exemplar();
    if (!exemplar) return nb::none();
    nb::dict labels;
    for (const auto& [name, value] : gpe::ExemplarLabels::decode(exemplar->labels)) {
        labels[nb::str(name.data(), name.size())] = nb::str(value.data(), value.size());
    }
    const nb::object timestamp =
        std::isnan(exemplar->timestamp) ? nb::none() : nb::cast(exemplar->timestamp);
    return nb::module_::import_("prometheus_client.samples")
        .attr("Exemplar")(labels, exemplar->value, timestamp);
}

}  // namespace

NB_MODULE(_native, m) {
    // #lizard forgives: a binding table, one statement per bound function
    bind_redis(m);
    bind_settings(m);
    bind_worker_metrics(m);
    bind_request_outcome(m);
    bind_wsgi_recorder(m);
    m.doc() = "Native core of gunicorn_prometheus_exporter";
    // Metrics usually live in module globals until the interpreter exits;
    // that is not a leak worth a report on every shutdown.
    nb::set_leak_warnings(false);

    nb::class_<gpe::ProcessIdentity>(
        m, "ProcessIdentity",
        "The process identity in a group of values' file names ({prefix}_{name}.db).")
        .def(nb::new_(&gpe::ProcessIdentity::named), "name"_a, "A group named by the caller.")
        .def_static("pid", &gpe::ProcessIdentity::pid, "The default group: this process's pid.")
        .def_prop_ro("name", &gpe::ProcessIdentity::name)
        .def("rename", &gpe::ProcessIdentity::rename, "name"_a,
             "Move every value of the group to the files of `name`, in creation order.")
        .def("close_files", &gpe::ProcessIdentity::close_files,
             "Close the group's files; its values reopen them at their next update.");

    nb::class_<gpe::Value>(m, "NativeValue",
                           "A prometheus_client value stored in this process's mmap file.")
        .def(
            "__init__",
            [](gpe::Value* self, std::string_view typ, std::string_view metric_name,
               std::string_view name, nb::handle labelnames, nb::handle labelvalues,
               std::string_view help_text, std::string_view multiprocess_mode,
               nb::handle /*redis_client*/, nb::handle /*redis_key_prefix*/,
               std::shared_ptr<gpe::ProcessIdentity> identity, nb::kwargs) {
                // The seed's RedisValue takes redis_client and redis_key_prefix
                // positionally; values here never talk to Redis (the mirror does).
                copy_deprecated_directory_variable();
                const std::string key =
                    gpe::encode_series_key(metric_name, name, to_strings(labelnames, "label names"),
                                           to_strings(labelvalues, "label values"), help_text);
                new (self) gpe::Value(gpe::file_prefix_for(typ, multiprocess_mode), key,
                                      identity ? std::move(identity) : gpe::ProcessIdentity::pid());
            },
            "typ"_a, "metric_name"_a, "name"_a, "labelnames"_a, "labelvalues"_a, "help_text"_a,
            "multiprocess_mode"_a = "", "redis_client"_a = nb::none(),
            "redis_key_prefix"_a = nb::none(), nb::kw_only(),
            nb::arg("identity").none() = nb::none(), "kwargs"_a)
        .def("inc", &gpe::Value::inc, "amount"_a)
        .def(
            "set",
            [](gpe::Value& self, double value, std::optional<double> timestamp) {
                self.set(value, timestamp.value_or(0.0));
            },
            "value"_a, "timestamp"_a = nb::none())
        .def("get", &gpe::Value::get)
        .def("get_timestamp", &gpe::Value::timestamp)
        .def("set_exemplar", &set_exemplar, "exemplar"_a,
             "Store a prometheus_client Exemplar (labels, value, timestamp) as this value's "
             "latest, for the merged OpenMetrics view; ValueError for labels prometheus_client "
             "refuses.")
        .def("get_exemplar", &get_exemplar,
             "This process's latest Exemplar of this value, or None.")
        .def_prop_ro("key", &gpe::Value::key)
        .def_prop_ro("file_prefix", &gpe::Value::prefix)
        .def_static(
            "close_all_files", [] { gpe::ProcessIdentity::pid()->close_files(); },
            "Close the files of values of this process's pid (prometheus_client's classmethod).");
    nb::type<gpe::Value>().attr("_multiprocess") = true;
    init_fast_methods(nb::type<gpe::Value>());
    m.def("fast_method", &make_fast_method, "kind"_a, "original"_a);

    m.def(
        "set_directory",
        [](std::string directory) {
            gpe::ValueStore::instance().set_directory(std::move(directory));
        },
        "directory"_a, "Directory for this process's files ('' = PROMETHEUS_MULTIPROC_DIR).");
    m.def("copy_deprecated_directory_variable", &copy_deprecated_directory_variable,
          "Copy prometheus_multiproc_dir to PROMETHEUS_MULTIPROC_DIR with a DeprecationWarning, "
          "as prometheus_client does.");
    m.def(
        "count_storage_errors_in",
        [](gpe::Value* counter) { gpe::ValueStore::instance().count_storage_errors_in(counter); },
        "counter"_a.none(),
        "Increment this counter's native value at each storage failure (keep it alive).");
    m.def(
        "storage_errors", [] { return gpe::ValueStore::instance().storage_errors(); },
        "Values of this process that could not be stored in a file so far.");
    m.def(
        "set_warning_handler",
        [](std::function<void(const std::string&)> handler) {
            gpe::ValueStore::instance().set_warning_handler(std::move(handler));
        },
        "handler"_a);

    m.def(
        "series_key",
        [](std::string_view metric_name, std::string_view name, nb::handle labelnames,
           nb::handle labelvalues, std::string_view help_text) {
            return gpe::encode_series_key(metric_name, name, to_strings(labelnames, "label names"),
                                          to_strings(labelvalues, "label values"), help_text);
        },
        "metric_name"_a, "name"_a, "labelnames"_a, "labelvalues"_a, "help_text"_a);
    m.def(
        "set_value_only_layout",
        [](bool value_only) {
            gpe::set_entry_layout(value_only ? gpe::EntryLayout::kValueOnly
                                             : gpe::EntryLayout::kValueAndTimestamp);
        },
        "value_only"_a,
        "Files as prometheus_client <= 0.17 writes them: a value without a timestamp.");
    m.def(
        "scrub_environment_variable",
        [](const std::string& name) {
            // Overwrite the value where it lives (the environment block that
            // /proc/PID/environ shows and children inherit), then unset it.
            if (char* value = std::getenv(name.c_str())) std::memset(value, 0, std::strlen(value));
            ::unsetenv(name.c_str());
        },
        "name"_a, "Zero a variable's value in this process's environment, then unset it.");
    m.def("file_prefix_for", &gpe::file_prefix_for, "type"_a, "multiprocess_mode"_a = "",
          "File name prefix ({type} or gauge_{mode}); ValueError for a bad type or mode.");

    nb::class_<gpe::MultiprocessReader>(m, "MultiprocessReader")
        .def(nb::init<>())
        .def(
            "render_directory",
            [](gpe::MultiprocessReader& self, const std::string& directory, bool openmetrics) {
                gpe::DirectorySource source(self, directory);
                return render_to_python(source, openmetrics);
            },
            "directory"_a, "openmetrics"_a = false)
        .def(
            "collect_directory",
            [](gpe::MultiprocessReader& self, const std::string& directory, bool accumulate) {
                gpe::DirectorySource source(self, directory);
                return collected_to_python([&] { return source.collect(accumulate); });
            },
            "directory"_a, "accumulate"_a = true)
        .def(
            "merge_files",
            [](gpe::MultiprocessReader& self, const std::vector<std::string>& paths,
               bool accumulate) {
                return collected_to_python([&] { return self.merge_files(paths, accumulate); });
            },
            "paths"_a, "accumulate"_a = true);

    m.def(
        "mark_process_dead",
        [](const std::string& directory, std::string_view pid) {
            gpe::Diagnostics diagnostics;
            gpe::ArchiveReport report;
            {
                nb::gil_scoped_release release;
                report = gpe::mark_process_dead(directory, pid, diagnostics);
            }
            return nb::make_tuple(report.removed, report.folded, diagnostics.warnings);
        },
        "directory"_a, "pid"_a);
}
