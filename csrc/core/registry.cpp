#include "registry.h"

#include <algorithm>
#include <map>
#include <mutex>

namespace mb {
namespace {

struct Entry {
  std::string name;
  int priority;
  BackendFactory factory;
  std::unique_ptr<Backend> instance;
};

// A function-local static: registrations in other translation units may run
// before this file's globals are initialised.
std::vector<Entry>& entries() {
  static std::vector<Entry> list;
  return list;
}

std::mutex& lock() {
  static std::mutex m;
  return m;
}

}  // namespace

BackendRegistration::BackendRegistration(const char* name, int priority, BackendFactory factory) {
  std::lock_guard<std::mutex> guard(lock());
  auto& list = entries();
  list.push_back({name, priority, std::move(factory), nullptr});
  std::stable_sort(list.begin(), list.end(),
                   [](const Entry& a, const Entry& b) { return a.priority < b.priority; });
}

std::vector<std::string> backend_names() {
  std::lock_guard<std::mutex> guard(lock());
  std::vector<std::string> names;
  for (const auto& e : entries()) names.push_back(e.name);
  return names;
}

Backend& backend(const std::string& name) {
  std::lock_guard<std::mutex> guard(lock());
  for (auto& e : entries()) {
    if (e.name != name) continue;
    if (!e.instance) e.instance = e.factory();
    return *e.instance;
  }
  std::string known;
  for (const auto& e : entries()) known += (known.empty() ? "" : ", ") + e.name;
  throw UsageError("[core::backend] unknown backend '" + name + "' (this build has: " + known + ")");
}

}  // namespace mb
