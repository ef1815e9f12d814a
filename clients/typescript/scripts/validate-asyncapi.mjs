// Validates an AsyncAPI document with @asyncapi/parser; prints each diagnostic as a JSON line
// and exits 1 when any is an error. Usage: node scripts/validate-asyncapi.mjs FILE
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';

const file = process.argv[2];
if (!file) {
  console.error('usage: validate-asyncapi.mjs FILE');
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(file, 'utf8'));
const severities = ['error', 'warning', 'information', 'hint'];
for (const diagnostic of diagnostics) {
  console.log(
    JSON.stringify({
      severity: severities[diagnostic.severity],
      code: diagnostic.code,
      path: diagnostic.path.join('.'),
      message: diagnostic.message,
    }),
  );
}
const errors = diagnostics.filter((diagnostic) => diagnostic.severity === 0);
if (!document || errors.length) {
  console.log(`invalid: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(
  `valid: ${document.channels().length} channels, ${document.operations().length} operations`,
);
