// A small CSV reader (header row, quoted fields with "" escapes), shared by the page and the
// tests; and the feature matrix a model reads from a table, as `tns predict --data` builds it.

/** Parses CSV text into `{ header, rows }` (rows of strings). */
export function parseCsv(text) {
  const rows = [];
  let field = '', row = [], quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field.trim()); field = ''; }
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field.trim()); field = '';
      if (row.length > 1 || row[0] !== '') rows.push(row);
      row = [];
    } else field += c;
  }
  if (field !== '' || row.length) { row.push(field.trim()); rows.push(row); }
  const header = rows.shift() || [];
  return { header, rows };
}

/**
 * The rows a model reads from a parsed table: per row its series, time (seconds) and feature
 * values in the model's order (one-hot `COLUMN=value` features of categorical columns
 * included). `parseTime` is the engine's time parser. Throws with the row and column of a bad
 * cell.
 */
export function modelRows(table, model, parseTime) {
  const meta = model.metadata.data || {};
  const index = (name) => {
    const k = table.header.indexOf(name);
    if (k < 0) throw new Error(`the table has no column "${name}" (the model reads ${model.features.join(', ')})`);
    return k;
  };
  const categorical = meta.categorical || [];
  const features = model.features.map((f) => {
    const eq = f.indexOf('=');
    if (eq > 0 && categorical.includes(f.slice(0, eq))) return { column: index(f.slice(0, eq)), value: f.slice(eq + 1) };
    return { column: index(f) };
  });
  const time = meta.time_column ? index(meta.time_column) : -1;
  const series = meta.series_column ? index(meta.series_column) : -1;
  return table.rows
    .filter((r) => meta.series == null || r[series] === meta.series)
    .map((r, i) => {
      const t = time >= 0 ? parseTime(r[time]) : i + 1;
      if (t === undefined) throw new Error(`row ${i + 2}: time "${r[time]}" is not a time`);
      const values = new Float64Array(features.length);
      features.forEach((f, k) => {
        if (f.value !== undefined) { values[k] = r[f.column] === f.value ? 1 : 0; return; }
        const v = Number(r[f.column]);
        if (r[f.column] === '' || !Number.isFinite(v)) {
          throw new Error(`row ${i + 2}, column "${table.header[f.column]}": "${r[f.column]}" is not a finite number`);
        }
        values[k] = v;
      });
      return { series: series >= 0 ? r[series] : 'main', time: t, timeText: time >= 0 ? r[time] : String(t), values };
    });
}
