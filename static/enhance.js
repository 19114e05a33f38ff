// Optional enhancements; every page works without this file.
document.querySelectorAll('.share input[readonly]').forEach(function (input) {
  if (!navigator.clipboard) return;
  var button = document.createElement('button');
  button.type = 'button';
  button.className = 'button secondary small';
  button.textContent = 'Copy link';
  button.addEventListener('click', function () {
    navigator.clipboard.writeText(input.value).then(function () { button.textContent = 'Copied'; });
  });
  input.insertAdjacentElement('afterend', button);
});
