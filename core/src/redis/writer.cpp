#include "gpe/redis/writer.hpp"

#include "gpe/strings.hpp"

namespace gpe::redis {

bool Deadline::due(bool force) const {
    return enabled() && (force || text_.empty() || Clock::now() >= next_renewal_);
}

void Deadline::renew(Client& client) {
    text_ =
        std::to_string(static_cast<long long>(client.server_time() * 1000) + ttl_seconds_ * 1000LL);
}

void Deadline::confirm() {
    next_renewal_ = Clock::now() + std::chrono::milliseconds(ttl_seconds_ * 1000LL / 3);
}

Command set_value(const std::string& metric_key, double value, double timestamp) {
    return {"HSET",
            metric_key,
            std::string(field::kValue),
            format_value(value),
            std::string(field::kTimestamp),
            format_value(timestamp)};
}

Command set_meta(const std::string& meta_key, std::string_view original_key, std::string_view typ,
                 std::string_view mode) {
    return {"HSET",
            meta_key,
            std::string(field::kOriginalKey),
            std::string(original_key),
            std::string(field::kTyp),
            std::string(typ),
            std::string(field::kMode),
            std::string(mode)};
}

Command expire_at(const std::string& key, const Deadline& deadline) {
    return {"PEXPIREAT", key, deadline.text()};
}

Command new_keyset(std::string_view prefix) {
    return {"SET", keyset_key(prefix), new_keyset_version()};
}

SeriesWriter::SeriesWriter(std::shared_ptr<Client> client, std::string prefix, int ttl_seconds)
    : client_(std::move(client)), prefix_(std::move(prefix)), deadline_(ttl_seconds) {}

std::vector<std::string> SeriesWriter::write(std::string_view store, std::string_view process,
                                             std::string_view series_key, std::string_view typ,
                                             std::string_view mode, double value,
                                             double timestamp) {
    const SeriesKeys keys = series_keys(prefix_, store, process, series_key);
    std::vector<Command> commands{set_value(keys.metric, value, timestamp),
                                  set_meta(keys.meta, series_key, typ, mode)};
    const bool renewing = deadline_.due(false);
    if (renewing) deadline_.renew(*client_);
    if (deadline_.enabled()) {
        commands.push_back(expire_at(keys.metric, deadline_));
        commands.push_back(expire_at(keys.meta, deadline_));
    }
    const std::vector<Reply> replies = client_->pipeline(commands);
    if (renewing) deadline_.confirm();
    std::vector<std::string> refused;
    for (size_t i = 0; i < replies.size(); ++i) {
        if (replies[i].is_error())
            refused.push_back(concat("skipped Redis key ", commands[i][1], ": ", replies[i].str));
    }
    // A new series: readers list the keys again.
    if (replies.front().integer > 0) client_->command(new_keyset(prefix_));
    return refused;
}

std::optional<std::pair<double, double>> SeriesWriter::read(std::string_view store,
                                                            std::string_view process,
                                                            std::string_view series_key) {
    const std::string metric_key = series_keys(prefix_, store, process, series_key).metric;
    const Reply reply = client_->command(
        {"HMGET", metric_key, std::string(field::kValue), std::string(field::kTimestamp)});
    if (reply.elements.size() != 2 || reply.elements[0].type != Reply::Type::kString) {
        return std::nullopt;
    }
    const auto value = parse_value(reply.elements[0].str);
    const auto timestamp = reply.elements[1].type == Reply::Type::kString
                               ? parse_value(reply.elements[1].str)
                               : std::optional<double>(0.0);
    if (!value || !timestamp) throw Error(Error::Kind::kServer, metric_key + ": not a number");
    return std::pair{*value, *timestamp};
}

}  // namespace gpe::redis
