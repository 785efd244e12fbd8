#include "redis_bindings.hpp"

#include <nanobind/stl/function.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <optional>
#include <set>
#include <string>

#include "convert.hpp"
#include "gpe/multiprocess.hpp"
#include "gpe/redis/client.hpp"
#include "gpe/redis/fleet.hpp"
#include "gpe/redis/fold.hpp"
#include "gpe/redis/layout.hpp"
#include "gpe/redis/mirror_service.hpp"
#include "gpe/redis/reader.hpp"
#include "gpe/redis/writer.hpp"

namespace nb = nanobind;
using namespace nb::literals;
namespace redis = gpe::redis;

namespace {

// The Python exception types, created once when the module is imported and
// read by the exception translator afterwards.
struct ErrorTypes {
    PyObject* base = nullptr;
    PyObject* connection = nullptr;
    PyObject* timeout = nullptr;
    PyObject* authentication = nullptr;
    PyObject* response = nullptr;
};
ErrorTypes error_types;

PyObject* new_error_type(nb::module_& m, const char* name, PyObject* base, const char* doc) {
    const std::string qualified = std::string("gunicorn_prometheus_exporter._native.") + name;
    PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, base, nullptr);
    if (type == nullptr) throw nb::python_error();
    m.attr(name) = nb::handle(type);
    return type;
}

void translate(const std::exception_ptr& error, void*) {
    try {
        std::rethrow_exception(error);
    } catch (const redis::Error& e) {
        PyObject* type = error_types.response;
        switch (e.kind()) {
            case redis::Error::Kind::kConnection:
                type = error_types.connection;
                break;
            case redis::Error::Kind::kTimeout:
                type = error_types.timeout;
                break;
            case redis::Error::Kind::kAuthentication:
                type = error_types.authentication;
                break;
            case redis::Error::Kind::kServer:
            case redis::Error::Kind::kProtocol:
                type = error_types.response;
                break;
        }
        PyErr_SetString(type, e.what());
    }
}

// Replies as redis-py returns them without decode_responses: bulk strings as
// bytes, integers as int, nil as None, arrays as lists, status as str.
nb::object to_python(const redis::Reply& reply) {
    switch (reply.type) {
        case redis::Reply::Type::kString:
            return nb::bytes(reply.str.data(), reply.str.size());
        case redis::Reply::Type::kStatus:
            return nb::str(reply.str.c_str(), reply.str.size());
        case redis::Reply::Type::kInteger:
            return nb::int_(reply.integer);
        case redis::Reply::Type::kNil:
            return nb::none();
        case redis::Reply::Type::kError: {
            nb::object error =
                nb::handle(error_types.response)(nb::str(reply.str.c_str(), reply.str.size()));
            return error;
        }
        case redis::Reply::Type::kArray: {
            nb::list items;
            for (const auto& element : reply.elements) items.append(to_python(element));
            return items;
        }
    }
    return nb::none();
}

redis::Command to_command(nb::handle args) {
    redis::Command command;
    for (nb::handle arg : args) {
        if (nb::isinstance<nb::bytes>(arg)) {
            nb::bytes b = nb::borrow<nb::bytes>(arg);
            command.emplace_back(b.c_str(), b.size());
        } else if (nb::isinstance<nb::str>(arg)) {
            command.emplace_back(nb::cast<std::string>(arg));
        } else if (nb::isinstance<nb::float_>(arg)) {
            command.emplace_back(redis::format_value(nb::cast<double>(arg)));
        } else {
            command.emplace_back(nb::cast<std::string>(nb::str(arg)));
        }
    }
    if (command.empty()) throw nb::value_error("empty Redis command");
    return command;
}

void bind_errors(nb::module_& m) {
    error_types.base =
        new_error_type(m, "RedisError", PyExc_Exception, "A Redis operation failed.");
    error_types.connection = new_error_type(m, "RedisConnectionError", error_types.base,
                                            "Redis cannot be reached (worth a retry).");
    error_types.timeout = new_error_type(m, "RedisTimeoutError", error_types.base,
                                         "Redis did not answer in time (worth a retry).");
    error_types.authentication = new_error_type(m, "RedisAuthenticationError", error_types.base,
                                                "Redis refused the credentials.");
    error_types.response = new_error_type(m, "RedisResponseError", error_types.base,
                                          "Redis answered a command with an error.");
    nb::register_exception_translator(&translate);
}

void bind_url(nb::module_& m) {
    m.def(
        "parse_redis_url",
        [](const std::string& url) {
            const redis::Options o = redis::parse_url(url);
            nb::dict out;
            out["host"] = o.host;
            out["port"] = o.port;
            out["unix_socket_path"] = o.unix_socket;
            out["db"] = o.db;
            out["username"] = o.username;
            out["password"] = o.password;
            out["ssl"] = o.tls.enabled;
            out["ssl_ca_certs"] = o.tls.ca_file;
            out["ssl_ca_path"] = o.tls.ca_path;
            out["ssl_certfile"] = o.tls.cert_file;
            out["ssl_keyfile"] = o.tls.key_file;
            out["ssl_verify"] = o.tls.verify;
            if (o.sentinel
                    .enabled()) {  // redis+sentinel:// only: other URLs' keys stay as they were
                out["sentinels"] = redis::format_sentinels(o.sentinel.sentinels);
                out["sentinel_master"] = o.sentinel.master;
                out["sentinel_password"] = o.sentinel.password;
            }
            if (o.cluster.enabled())
                out["cluster_nodes"] = redis::format_sentinels(o.cluster.nodes);
            return out;
        },
        "url"_a);
}

// A binding table: one class, its constructor taking redis-py's settings.
void bind_client(nb::module_& m) {
    // #lizard forgives: a binding table, one statement per bound method
    static const redis::Options kDefaults;
    nb::class_<redis::Client>(m, "RedisClient",
                              "Native Redis connection with reconnect and backoff.")
        .def(
            "__init__",
            [](redis::Client* self, const std::string& host, int port, int db,
               const std::string& username, const std::string& password,
               const std::string& unix_socket_path, bool ssl, const std::string& ssl_ca_certs,
               const std::string& ssl_ca_path, const std::string& ssl_certfile,
               const std::string& ssl_keyfile, bool ssl_verify, double socket_timeout,
               double socket_connect_timeout, size_t max_reply_bytes, const std::string& sentinels,
               const std::string& sentinel_master, const std::string& sentinel_password,
               bool cluster, const std::string& cluster_nodes) {
                if (max_reply_bytes < redis::kMinMaxReplyBytes ||
                    max_reply_bytes > redis::kMaxMaxReplyBytes) {
                    throw nb::value_error(("max_reply_bytes=" + std::to_string(max_reply_bytes) +
                                           " must be from " +
                                           std::to_string(redis::kMinMaxReplyBytes) + " to " +
                                           std::to_string(redis::kMaxMaxReplyBytes))
                                              .c_str());
                }
                redis::Options o;
                o.host = host;
                o.port = port;
                o.db = db;
                o.username = username;
                o.password = password;
                o.unix_socket = unix_socket_path;
                o.tls = redis::TlsOptions{ssl,          ssl_ca_certs, ssl_ca_path,
                                          ssl_certfile, ssl_keyfile,  ssl_verify};
                o.socket_timeout = socket_timeout;
                o.connect_timeout = socket_connect_timeout;
                o.max_reply_bytes = max_reply_bytes;
                if (!sentinels.empty()) o.sentinel.sentinels = redis::parse_sentinels(sentinels);
                o.sentinel.master = sentinel_master;
                o.sentinel.password = sentinel_password;
                redis::check_sentinel(o.sentinel);
                redis::apply_cluster_settings(o, cluster, cluster_nodes);
                new (self) redis::Client(std::move(o));
            },
            // Options' defaults, which a test holds to the settings table.
            "host"_a = kDefaults.host, "port"_a = kDefaults.port, "db"_a = kDefaults.db,
            "username"_a = "", "password"_a = "", "unix_socket_path"_a = "", "ssl"_a = false,
            "ssl_ca_certs"_a = "", "ssl_ca_path"_a = "", "ssl_certfile"_a = "",
            "ssl_keyfile"_a = "", "ssl_verify"_a = kDefaults.tls.verify,
            "socket_timeout"_a = kDefaults.socket_timeout,
            "socket_connect_timeout"_a = kDefaults.connect_timeout,
            "max_reply_bytes"_a = kDefaults.max_reply_bytes, "sentinels"_a = "",
            "sentinel_master"_a = "", "sentinel_password"_a = "", "cluster"_a = false,
            "cluster_nodes"_a = "")
        .def(
            "execute",
            [](redis::Client& self, nb::handle args) {
                const redis::Command command = to_command(args);
                redis::Reply reply;
                {
                    nb::gil_scoped_release release;
                    reply = self.command(command);
                }
                return to_python(reply);
            },
            "args"_a, "Runs one command; an error reply raises RedisResponseError.")
        .def(
            "pipeline",
            [](redis::Client& self, nb::handle commands) {
                std::vector<redis::Command> batch;
                for (nb::handle args : commands) batch.push_back(to_command(args));
                std::vector<redis::Reply> replies;
                {
                    nb::gil_scoped_release release;
                    replies = self.pipeline(batch);
                }
                nb::list out;
                for (const auto& reply : replies) out.append(to_python(reply));
                return out;
            },
            "commands"_a,
            "Runs commands in one round trip; error replies are returned as exceptions.")
        .def("ping",
             [](redis::Client& self) {
                 nb::gil_scoped_release release;
                 self.ping();
             })
        .def("server_time",
             [](redis::Client& self) {
                 nb::gil_scoped_release release;
                 return self.server_time();
             })
        .def_prop_ro("connection_epoch", &redis::Client::connection_epoch)
        .def_prop_ro("description",
                     [](redis::Client& self) { return redis::describe(self.options()); })
        .def("reset_after_fork", &redis::Client::reset_after_fork);
}

void bind_layout(nb::module_& m) {
    // #lizard forgives: a binding table, one statement per bound function
    m.def("redis_key_for", [](const std::string& prefix, const std::string& store,
                              const std::string& process, const std::string& data_type,
                              const std::string& series_key) {
        return redis::make_key(prefix, store, process, data_type, redis::series_hash(series_key));
    });
    m.def(
        "redis_fold_process",
        [](redis::Client& client, const std::string& prefix, const std::string& process,
           const std::string& archive) {
            redis::FoldReport report;
            {
                nb::gil_scoped_release release;
                report = redis::fold_process(client, prefix, process, archive);
            }
            return nb::make_tuple(report.folded, report.deleted, report.skipped);
        },
        "client"_a, "prefix"_a, "process"_a, "archive"_a);
    m.def("redis_process_id", &redis::process_id, "pid"_a, "instance"_a);
    m.def("redis_glob_escape", &redis::glob_escape, "text"_a);
    m.def("redis_format_value", &redis::format_value, "value"_a);
    m.def(
        "redis_parse_key",
        [](const std::string& key, const std::string& prefix) -> std::optional<nb::tuple> {
            const auto parts = redis::parse_key(key, prefix);
            if (!parts) return std::nullopt;
            return nb::make_tuple(std::string(parts->store), std::string(parts->process),
                                  std::string(parts->data_type), std::string(parts->hash));
        },
        "key"_a, "prefix"_a);

    m.def("redis_key_pattern", &redis::key_pattern, "prefix"_a, "store_glob"_a, "process"_a,
          "data_type"_a, "SCAN MATCH pattern for one process's keys of a data type.");
    m.attr("REDIS_METRIC") = std::string(redis::kMetric);
    m.attr("REDIS_META") = std::string(redis::kMeta);
    m.attr("REDIS_FIELD_VALUE") = std::string(redis::field::kValue);
    m.attr("REDIS_FIELD_TIMESTAMP") = std::string(redis::field::kTimestamp);
    m.attr("REDIS_FIELD_ORIGINAL_KEY") = std::string(redis::field::kOriginalKey);
    m.attr("REDIS_FIELD_TYP") = std::string(redis::field::kTyp);
    m.attr("REDIS_FIELD_MODE") = std::string(redis::field::kMode);
    m.def(
        "directory_processes",
        [](const std::string& directory) {
            // Set before the names die with their paths.
            std::set<std::string> processes;
            for (const std::string& path : gpe::list_db_files(directory)) {
                const gpe::FileName name = gpe::parse_file_name(path);
                if (name.valid) processes.emplace(name.process);
            }
            return std::vector<std::string>(processes.begin(), processes.end());
        },
        "directory"_a,
        "The processes (pids, 'archive') with files in a multiprocess directory, as the core "
        "reads their names.");
    m.def(
        "redis_fold_expired",
        [](redis::Client& client, const std::string& prefix) {
            const redis::FleetReport r = redis::fold_expired(client, prefix);
            return std::make_tuple(r.retired, r.chunks, r.folded, r.more);
        },
        "client"_a, "prefix"_a, nb::call_guard<nb::gil_scoped_release>(),
        "Folds the nodes whose deadline passed into the fleet archive (a bounded amount): "
        "(retired, chunks, folded, more).");
    m.def(
        "redis_fold_node",
        [](redis::Client& client, const std::string& prefix, const std::string& node,
           size_t max_chunks) {
            const redis::FleetReport r = redis::fold_node(client, prefix, node, false, max_chunks);
            return std::make_tuple(r.retired, r.chunks, r.folded, r.more);
        },
        "client"_a, "prefix"_a, "node"_a, "max_chunks"_a = 64,
        nb::call_guard<nb::gil_scoped_release>(),
        "Retires `node` and folds it into the fleet archive (at most max_chunks chunks).");
}

void bind_writers(nb::module_& m) {
    nb::class_<redis::SeriesWriter>(m, "RedisSeriesWriter",
                                    "Writes and reads single series as the mirror does.")
        .def(nb::init<std::shared_ptr<redis::Client>, std::string, int>(), "client"_a, "prefix"_a,
             "ttl_seconds"_a)
        .def("write", &redis::SeriesWriter::write, "store"_a, "process"_a, "series_key"_a, "typ"_a,
             "multiprocess_mode"_a, "value"_a, "timestamp"_a,
             nb::call_guard<nb::gil_scoped_release>())
        .def("read", &redis::SeriesWriter::read, "store"_a, "process"_a, "series_key"_a,
             nb::call_guard<nb::gil_scoped_release>(),
             "(value, timestamp), or None when the series has no value.");

    nb::class_<redis::MirrorService>(m, "MirrorService",
                                     "Mirrors a multiprocess directory into Redis on a thread.")
        .def(
            "__init__",
            [](redis::MirrorService* self, std::shared_ptr<redis::Client> client,
               const std::string& directory, const std::string& prefix, const std::string& instance,
               int ttl_seconds, double interval, nb::object logger, const std::string& layout) {
                // Called from the mirror thread: take the GIL, and never let a
                // logging problem reach the thread.
                auto log = [logger = std::make_shared<nb::object>(std::move(logger))](
                               int level, const std::string& message) {
                    if (!Py_IsInitialized()) return;
                    nb::gil_scoped_acquire acquire;
                    try {
                        (*logger)(level, message);
                    } catch (nb::python_error& e) {
                        e.discard_as_unraisable("gunicorn_prometheus_exporter mirror logger");
                    }
                };
                const auto parsed = redis::parse_layout(layout);
                if (!parsed) throw std::invalid_argument("layout must be instance or series");
                new (self) redis::MirrorService(std::move(client),
                                                redis::MirrorOptions{.directory = directory,
                                                                     .prefix = prefix,
                                                                     .instance = instance,
                                                                     .ttl_seconds = ttl_seconds,
                                                                     .layout = *parsed},
                                                interval, std::move(log));
            },
            "client"_a, "directory"_a, "prefix"_a, "instance"_a, "ttl_seconds"_a, "interval"_a,
            "logger"_a, "layout"_a = "instance")
        .def("start", &redis::MirrorService::start, nb::call_guard<nb::gil_scoped_release>())
        .def("stop", &redis::MirrorService::stop, nb::call_guard<nb::gil_scoped_release>())
        .def("pass_now", &redis::MirrorService::pass_now, nb::call_guard<nb::gil_scoped_release>())
        .def("is_leader", &redis::MirrorService::is_leader)
        .def("after_fork_in_child", &redis::MirrorService::after_fork_in_child);
}

}  // namespace

void bind_redis(nb::module_& m) {
    bind_errors(m);
    bind_url(m);
    bind_client(m);
    bind_layout(m);
    bind_writers(m);

    nb::class_<redis::Reader>(m, "RedisReader", "Reads and merges all series under a prefix.")
        .def(nb::init<std::shared_ptr<redis::Client>, std::string>(), "client"_a, "prefix"_a)
        .def(
            "render",
            [](redis::Reader& self, bool openmetrics) {
                return render_to_python(self, openmetrics);
            },
            "openmetrics"_a = false)
        .def(
            "collect",
            [](redis::Reader& self, bool accumulate) {
                return collected_to_python([&] { return self.collect(accumulate); });
            },
            "accumulate"_a = true)
        .def("stats", [](const redis::Reader& self) {
            const redis::ReadStats stats = self.last_stats();
            nb::dict out;
            out["commands"] = stats.commands;
            out["keys"] = stats.keys;
            out["attempts"] = stats.attempts;
            return out;
        });
}
