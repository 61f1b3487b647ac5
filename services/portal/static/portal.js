// The only script: move focus to the error summary after a failed submit (GOV.UK pattern), so
// screen-reader and keyboard users land on the list of what to fix. Pages work without it.
document.addEventListener('DOMContentLoaded', () => {
  const summary = document.getElementById('fehler');
  if (summary) summary.focus();
});
