// Optional enhancements; every page works without this file.
document.querySelectorAll('.share input[readonly]').forEach(function (input) {
  if (!navigator.clipboard) return;
  var button = document.createElement('button');
  button.type = 'button';
  button.className = 'button secondary small';
  button.textContent = 'Copy link';
  // A live region present from the start, so screen readers announce the copy.
  var status = document.createElement('span');
  status.className = 'visually-hidden';
  status.setAttribute('role', 'status');
  button.addEventListener('click', function () {
    navigator.clipboard.writeText(input.value).then(function () {
      button.textContent = 'Copied';
      status.textContent = 'Link copied';
    });
  });
  input.insertAdjacentElement('afterend', button);
  button.insertAdjacentElement('afterend', status);
});
