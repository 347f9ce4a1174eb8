#include "cli/table.h"

#include <algorithm>
#include <cstdio>

#include "common/printable.h"

namespace megabatch::cli {
namespace {

// `exact`: numbers as JSON writes them (shortest round-trip form) rather
// than rounded for reading. Other users' text (sweep names, query results)
// cannot drive the reader's terminal: control characters are escaped
// (newlines too unless `exact`, whose CSV quotes them).
std::string Cell(const nlohmann::json& v, bool exact = false) {
  if (v.is_null()) return "";
  if (v.is_string()) return Printable(v.get<std::string>(), exact);
  if (v.is_number_float() && !exact) return FormatNumber(v.get<double>());
  return v.dump();
}

}  // namespace

std::string CsvQuote(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string FormatNumber(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

nlohmann::json Table::ToJson() const {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& row : rows_) {
    nlohmann::json obj = nlohmann::json::object();
    for (size_t i = 0; i < columns_.size() && i < row.size(); ++i) {
      obj[columns_[i]] = row[i];
    }
    arr.push_back(std::move(obj));
  }
  return arr;
}

void Table::Print(std::ostream& out, OutputFormat format) const {
  if (format == OutputFormat::kJson) {
    out << ToJson().dump(2) << "\n";
    return;
  }
  if (format == OutputFormat::kCsv) {
    for (size_t i = 0; i < columns_.size(); ++i) {
      out << (i ? "," : "") << CsvQuote(Printable(columns_[i], true));
    }
    out << "\n";
    for (const auto& row : rows_) {
      for (size_t i = 0; i < row.size(); ++i) {
        out << (i ? "," : "") << CsvQuote(Cell(row[i], /*exact=*/true));
      }
      out << "\n";
    }
    return;
  }
  if (format == OutputFormat::kMarkdown) {
    auto escape = [](const std::string& s) {
      std::string e;
      for (char c : s) {
        if (c == '|') e += '\\';
        e += c == '\n' ? ' ' : c;
      }
      return e;
    };
    out << "|";
    for (const auto& c : columns_) out << " " << escape(Printable(c)) << " |";
    out << "\n|";
    for (size_t i = 0; i < columns_.size(); ++i) {
      bool numeric =
          std::any_of(rows_.begin(), rows_.end(), [&](const auto& row) {
            return i < row.size() && row[i].is_number();
          });
      out << (numeric ? " ---: |" : " --- |");
    }
    out << "\n";
    for (const auto& row : rows_) {
      out << "|";
      for (const auto& v : row) out << " " << escape(Cell(v)) << " |";
      out << "\n";
    }
    return;
  }
  std::vector<std::string> header;
  for (const auto& c : columns_) header.push_back(Printable(c));
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& row : rows_) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], Cell(row[i]).size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells,
                  const std::vector<nlohmann::json>* values) {
    std::string s;
    for (size_t i = 0; i < cells.size(); ++i) {
      bool right = values && (*values)[i].is_number();
      std::string pad(width[i] - cells[i].size(), ' ');
      s += (i ? "  " : "") + (right ? pad + cells[i] : cells[i] + pad);
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    out << s << "\n";
  };
  line(header, nullptr);
  for (const auto& row : rows_) {
    std::vector<std::string> cells;
    for (const auto& v : row) cells.push_back(Cell(v));
    line(cells, &row);
  }
}

}  // namespace megabatch::cli
